"""LGCD: the whole model, its training objectives and its sampler.

`LGCD` holds the source and target item tables and sequence encoders, the condition projections,
the pathway embedding, the denoiser and the guesser. Every method is a pure function of the
module's state and its arguments, so the caller splits the module once (`nnx.split`) and runs
`nnx.merge(graphdef, state).loss(...)` (or `.sample`, `.score`, ...) inside `jax.jit`. The
diffusion schedule is not state: it is rebuilt from the (static) config fields inside each traced
call, where it becomes constants.

Choices where the design leaves room (DESIGN.md §2):
- x0 = the target encoder's last state over the (real or pseudo) target sequence, under
  `stop_gradient` (model.x0 = "items": the weighted mean of the target items' own features). The
  target encoder is trained only by its own next-item objective (`encoder_loss`); letting the
  diffusion MSE reach it would let it shrink x0 towards a constant, which makes that MSE trivially
  small (representation collapse). The target item table still
  learns from the recommendation loss and from the clue tokens. The target sequence's padding is
  read from tgt > 0 and tgt_weight > 0; the weights themselves (clue similarities on the pseudo
  pathway) weight the recommendation loss, not the encoder input, which is fed the pseudo items as
  a plain sequence, as it was pre-trained.
- Recommendation loss: softmax cross-entropy of <x0_hat, e_i> over all target items, averaged over
  the user's target-sequence items weighted by tgt_weight (normalised per row), i.e. every real
  target item counts equally and a pseudo item counts by its clue similarity.
- Row weighting: a row's weight is weight * (1 if real else pseudo_weight), and every loss term is
  sum(row weight * row loss) / (number of actual rows). Dividing by the row count rather than the
  weight sum keeps an all-pseudo batch (the cyclic sampler makes them) down-weighted as a whole.
  A row without any target item has no x0 and counts as padding.
- Denoiser inputs: x_t = x0 noised to a t drawn over all T steps; with train.from_guess_share > 0 that
  share of the rows gets the guess (gradient stopped) noised to a t < T' instead, what the sampler
  gives the denoiser, so that it learns to correct the guess (BUILD_NOTES, issue 12, eighth session).
- Alignment: InfoNCE of cos(x0_hat_i, x0_j) / temperature over the batch's actual rows, positive
  j = i. Always computed and reported; added to the loss only when use_alignment.
- Guesser loss: MSE(guess, x0), in the loss whenever the guesser is used (use_guesser, or
  use_diffusion=False where the guesser alone produces x0_hat). With diffusion, the guess also gets
  the recommendation loss (weight train.guesser_rec_weight): it is where the reverse chain starts,
  and an MSE-only guess ranks poorly.
- Pooled clue: besides the clue tokens, the clue-similarity-weighted mean of the clue items'
  target-table features is a condition of its own (guesser input, MoE gate and fusion input).
  The table is the one items are scored with, so this vector carries the clue's ranking directly;
  attention pooling over 40+ mixed tokens tended to wash it out.
- model.item_bias adds a learned per-item offset to <x0_hat, e_i> (a popularity prior that a
  per-user dot product expresses poorly); off by default, on in the demo. It starts at zero or,
  with model.item_bias_init = "log_popularity", at the centred log(1 + count) of each item over all
  target-domain training sequences: only the overlap users' pairs train it later, while the
  target-only users know the catalogue's popularity best.
- Joint fine-tuning (train.joint_encoder_weight > 0, off by default): the diffusion stage keeps both
  encoders' next-item objective on single-domain batches (`joint_loss`), so the encoders follow the
  item tables that stage 2 moves. On the demo it did not measure better (BUILD_NOTES) and doubles
  the step's cost.
- The diffusion step t ~ U{0..T-1}; the denoiser is trained on x0 MSE (x0-parameterisation).
- collab_only / semantic_only get no semantic (resp. collaborative) input at all: fully masked
  tokens and zero pooled vectors, also in the MoE gate and the guesser.
- model.use_clues = False (DMCDR, DESIGN.md §2: guided by the source behaviour only) gets no clue
  input at all: the clue and summary tokens are masked out and the pooled clue is zero, in the
  denoiser, the MoE gate and the guesser; the source titles stay (they describe the source
  behaviour, not a clue). `uses_clues(config)` says whether a config's model reads clues at all.
- Sampling: DDIM (or DDPM) from the guess noised to T' = guess_start_step when use_guesser, else
  from pure noise at T; always on the real pathway. DDIM steps are capped at the chain length.

Dropout follows `attention.py`: methods take an rng and `train`; without training no dropout.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lgcd_jax.model import diffusion, scoring
from lgcd_jax.model.denoiser import Conditions, Denoiser
from lgcd_jax.model.encoder import SequenceEncoder, last_state, next_item_loss
from lgcd_jax.model.guesser import Guesser
from lgcd_jax.model.items import ItemTable
from lgcd_jax.model.settings import SAMPLERS, LGCDSettings

Batch = dict[str, Any]

# Shared sampled negatives of the next-item objective when the config has no
# `train.encoder_negatives` field (see `encoder.next_item_loss`).
# softplus^-1(1): every source position starts with weight 1, i.e. the joint MF's plain fold-in.


@flax.struct.dataclass
class ItemFeatures:
  """Both item tables' features, computed once (`LGCD.item_features`): constants of a set of
  weights, so a server (or the bench) computes them once per checkpoint instead of projecting
  every title table per batch. A table without titles has None: its rows are gathered from the ID
  table, which is as cheap.

  src: [N_src + 1, d] the source table's `features()` (ID + title), row 0 zero.
  src_title: [N_src + 1, d] its projected titles alone (`title_features()`).
  tgt: [N_tgt + 1, d] the target table's `features()`.
  """
  src: jax.Array | None
  src_title: jax.Array | None
  tgt: jax.Array | None


def recency_profile(maxlen: int, gamma: float) -> np.ndarray:
  """Initial anchor position parameters [maxlen]: softplus of entry l is gamma ** (maxlen - 1 - l),
  so the most recent item (the last column of a left-padded sequence) weighs 1 and each older one
  gamma times the next (1.0: the uniform weights of the MF fold-in). gamma in (0, 1] is checked
  where the settings are built (`LGCDSettings`)."""
  weights = gamma ** np.arange(maxlen - 1, -1, -1, dtype=np.float64)
  # softplus^-1(w) = log(expm1(w)); for w below ~1e-300 expm1 underflows, so floor the weights.
  return np.log(np.expm1(np.maximum(weights, 1e-30))).astype(np.float32)


def _weighted_mean(values: jax.Array, row_weight: jax.Array, num_rows: jax.Array) -> jax.Array:
  return jnp.sum(values * row_weight) / num_rows


def uses_clues(config: ml_collections.ConfigDict) -> bool:
  """Whether the model of `config` (after `builder.method_config`) reads any clue input.

  Cheap (two field reads) when the config has both fields, as a served checkpoint's does: the
  server asks once per request line."""
  m = config.get("model", {})
  use, conditioning = m.get("use_clues"), m.get("conditioning")
  if use is None or conditioning is None:  # a partial config: the defaults fill it in
    s = LGCDSettings.from_config(config)
    use, conditioning = s.use_clues, s.conditioning
  return bool(use) and conditioning != "collab_only"


class LGCD(nnx.Module):
  """Language-guided conditional diffusion for cross-domain recommendation (source -> target)."""

  def __init__(self, config: ml_collections.ConfigDict, num_src_items: int, num_tgt_items: int,
               src_title_emb: np.ndarray | None = None, tgt_title_emb: np.ndarray | None = None,
               *, rngs: nnx.Rngs, src_id_init: np.ndarray | None = None,
               tgt_id_init: np.ndarray | None = None, tgt_bias_init: np.ndarray | None = None):
    """Builds the model from `config.model`, `config.train`, `config.data`, `config.clues`.

    Args:
      config: the run config.
      num_src_items: source catalogue size.
      num_tgt_items: target catalogue size.
      src_title_emb: optional [num_src_items, text_dim] frozen title embeddings.
      tgt_title_emb: optional [num_tgt_items, text_dim] frozen title embeddings.
      rngs: initialisation randomness.
      src_id_init: optional [num_src_items, d] initial source ID embeddings.
      tgt_id_init: optional [num_tgt_items, d] initial target ID embeddings.
      tgt_bias_init: optional [num_tgt_items] initial item score offsets (with model.item_bias).
    """
    s = self.settings = LGCDSettings.from_config(config)
    d = s.d

    self.src_table = ItemTable(num_src_items, d, src_title_emb, rngs=rngs, id_init=src_id_init)
    self.tgt_table = ItemTable(num_tgt_items, d, tgt_title_emb, rngs=rngs, id_init=tgt_id_init)
    # A learned per-item score offset (popularity prior): a user-independent bias a dot product
    # with a per-user x0_hat can express only through item norms.
    if tgt_bias_init is not None and np.shape(tgt_bias_init) != (num_tgt_items,):
      raise ValueError(f"tgt_bias_init must be [{num_tgt_items}], got {np.shape(tgt_bias_init)}")
    bias = (jnp.zeros((num_tgt_items,)) if tgt_bias_init is None
            else jnp.asarray(tgt_bias_init, jnp.float32))
    self.tgt_bias = nnx.Param(bias) if self.settings.item_bias else None
    enc_args = (d, s.heads, s.encoder_layers, s.maxlen, s.dropout)
    self.src_encoder = SequenceEncoder(*enc_args, rngs=rngs)
    self.tgt_encoder = SequenceEncoder(*enc_args, rngs=rngs)

    # Semantic-token pieces: summary projection, clue gate on similarity, token-type and clue-rank
    # embeddings (so attention can tell titles, clues of each LLM rank, and the summary apart).
    self.summary_proj = nnx.Linear(s.text_dim, d, rngs=rngs)
    # Clue token = e_clue * sigmoid(a * sim + b): the model learns how far to trust similarity.
    self.clue_gate_scale = nnx.Param(jnp.ones(()))
    self.clue_gate_bias = nnx.Param(jnp.zeros(()))
    emb_init = nnx.initializers.normal(d**-0.5)
    self.token_type = nnx.Embed(3, d, embedding_init=emb_init, rngs=rngs)
    self.clue_rank = nnx.Embed(self.settings.clue_len, d, embedding_init=emb_init, rngs=rngs)
    self.pathway = nnx.Embed(2, d, embedding_init=emb_init, rngs=rngs)  # 0 pseudo, 1 real

    self.denoiser = Denoiser(d, s.heads, s.denoiser_layers, s.num_experts, rngs=rngs,
                             conditioning=self.settings.conditioning, use_moe=self.settings.use_moe,
                             dropout_rate=s.dropout)
    self.guesser = Guesser(4 * d, d, rngs=rngs, dropout_rate=s.dropout)

    if self.settings.anchor == "mf":
      # The collaborative anchor (see `anchor`): learned weights per source position, a logit
      # scale, and ReZero-style gates [guess, denoiser] on what the networks add to the anchor, so
      # that the untrained model ranks exactly as the joint MF whose factors fill the item tables.
      self.anchor_position = nnx.Param(jnp.asarray(
          recency_profile(s.maxlen, s.anchor_recency)))
      self.anchor_scale = nnx.Param(jnp.ones(()))
      self.residual_gate = nnx.Param(jnp.zeros((2,)))
      for table in (self.src_table, self.tgt_table):
        if table.title_proj is not None:  # titles start silent: the tables start as the MF's
          table.title_proj.kernel[...] = jnp.zeros_like(table.title_proj.kernel[...])

  # --- pieces -------------------------------------------------------------------------------------

  def schedule(self) -> diffusion.Schedule:
    """The beta schedule (rebuilt from static settings; constants under jit)."""
    s = self.settings
    return diffusion.make_schedule(s.beta_schedule, s.diffusion_steps, s.beta_start, s.beta_end)

  def encoder_loss(self, batch_src: Batch, batch_tgt: Batch, rng: jax.Array, train: bool = True
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Next-item loss of both encoders on single-domain batches ({"seq", "weight"} each).

    Returns (src loss + tgt loss, {"encoder_loss/src", "encoder_loss/tgt"}).
    """
    r_src, r_tgt = jax.random.split(rng)
    src = next_item_loss(self.src_encoder, self.src_table, batch_src["seq"], batch_src["weight"],
                         r_src, self.settings.encoder_negatives, train)
    tgt = next_item_loss(self.tgt_encoder, self.tgt_table, batch_tgt["seq"], batch_tgt["weight"],
                         r_tgt, self.settings.encoder_negatives, train)
    return src + tgt, {"encoder_loss/src": src, "encoder_loss/tgt": tgt}

  def conditions(self, batch: Batch, rng: jax.Array | None = None,
                 tgt_feats: jax.Array | None = None,
                 src_feats: tuple[jax.Array, jax.Array] | None = None) -> Conditions:
    """Condition tokens, masks and pooled vectors from src, clue, clue_sim, summary, has_summary.

    rng: dropout key for the source encoder (None: deterministic).
    tgt_feats: the target table's `features()`, when the caller has them (else looked up).
    src_feats: the source table's (`features()`, `title_features()`), when the caller has them.
    """
    src, clue = batch["src"], batch["clue"]
    if clue.shape[1] > self.settings.clue_len:
      raise ValueError(f"clue length {clue.shape[1]} exceeds data.clue_len "
                       f"{self.settings.clue_len}")
    batch_size = src.shape[0]
    src_mask = src > 0
    # One title projection for the encoder's inputs and the title tokens (under jit, a variant
    # that uses only one of them drops the other's work).
    if src_feats is None:
      src_emb, src_title = self.src_table.with_title(src)
    else:  # row 0 of both is zero, so padding gathers zeros as `with_title` gives
      src_emb, src_title = src_feats[0][src], src_feats[1][src]
    if self.settings.conditioning == "semantic_only":
      # The ablation has no collaborative input at all: skip the source encoder.
      collab_tokens = jnp.zeros(src.shape + (self.settings.d,), jnp.float32)
      collab_mask = jnp.zeros_like(src_mask)
      collab_pooled = jnp.zeros((batch_size, self.settings.d), jnp.float32)
    else:
      collab_tokens = self.src_encoder(src_emb, src_mask, rng)
      collab_mask = src_mask
      collab_pooled = last_state(collab_tokens, src_mask)

    num_sem = src.shape[1] + clue.shape[1] + 1
    if self.settings.conditioning == "collab_only":
      # The ablation has no semantic input at all: empty, fully masked semantic tokens.
      sem_tokens = jnp.zeros((batch_size, num_sem, self.settings.d), jnp.float32)
      sem_mask = jnp.zeros((batch_size, num_sem), bool)
      sem_pooled = jnp.zeros((batch_size, self.settings.d), jnp.float32)
      clue_pooled = jnp.zeros((batch_size, self.settings.d), jnp.float32)
    else:
      types = self.token_type.embedding[...]
      title_mask = src_mask & self.src_table.has_titles  # No titles: nothing to attend to.
      title_tok = src_title + types[0]
      clue_mask = clue > 0
      if not self.settings.use_clues:  # DMCDR: no clue input at all, whatever the batch holds
        clue_mask = jnp.zeros_like(clue_mask)
      gate = jax.nn.sigmoid(self.clue_gate_scale[...] * batch["clue_sim"]
                            + self.clue_gate_bias[...])
      ranks = self.clue_rank(jnp.arange(clue.shape[1]))[None]
      clue_emb = self.tgt_table(clue) if tgt_feats is None else tgt_feats[clue]
      clue_tok = clue_emb * gate[..., None] + types[1] + ranks
      # Similarity-weighted mean of the clue items' features: with the table shared with scoring,
      # <clue_pooled, e_i> is (up to item overlap) the clue's own ranking of item i.
      clue_w = jnp.where(clue_mask, batch["clue_sim"], 0.0)
      clue_pooled = (jnp.sum(clue_emb * clue_w[..., None], axis=1)
                     / jnp.maximum(jnp.sum(clue_w, axis=1, keepdims=True), 1e-6))
      summary_tok = (self.summary_proj(batch["summary"]) + types[2])[:, None, :]
      summary_mask = (batch["has_summary"] > 0)[:, None] & self.settings.use_clues
      sem_mask = jnp.concatenate([title_mask, clue_mask, summary_mask], axis=1)
      sem_tokens = jnp.concatenate([title_tok, clue_tok, summary_tok], axis=1)
      sem_tokens = sem_tokens * sem_mask[..., None]
      count = jnp.maximum(jnp.sum(sem_mask, axis=1, keepdims=True), 1)
      sem_pooled = jnp.sum(sem_tokens, axis=1) / count
    return Conditions(collab_tokens=collab_tokens, collab_mask=collab_mask, sem_tokens=sem_tokens,
                      sem_mask=sem_mask, collab_pooled=collab_pooled, sem_pooled=sem_pooled,
                      clue_pooled=clue_pooled)

  def target_repr(self, tgt: jax.Array, tgt_weight: jax.Array, tgt_feats: jax.Array) -> jax.Array:
    """x0 [B, d], gradient stopped: the target encoder's last state over tgt (no dropout), or with
    model.x0 = "items" the tgt_weight-weighted mean of the target items' features.
    tgt_feats: the target table's `features()`."""
    mask = (tgt > 0) & (tgt_weight > 0)
    if self.settings.x0 == "items":
      w = jnp.where(mask, tgt_weight, 0.0)
      x0 = (jnp.sum(tgt_feats[tgt] * w[..., None], axis=1)
            / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-8))
    else:
      x0 = last_state(self.tgt_encoder(tgt_feats[tgt], mask), mask)
    return jax.lax.stop_gradient(x0)

  def anchor(self, src: jax.Array, sampling: bool = False,
             src_feats: jax.Array | None = None) -> jax.Array | None:
    """The collaborative anchor [B, d] that x0_hat is generated around (model.anchor = "mf").

    A position-weighted sum of the source items' features, src being left-padded (the last column
    is the most recent item): with the item tables initialised from the joint MF (model.id_init =
    "mf_scores"), uniform weights make <anchor, e_i> the MF's fold-in score, and the learned
    weights let the sequence say how much recent items count (on Food-Kitchen a recency-weighted
    fold-in transfers from valid to test where overlap-only signals do not: BUILD_NOTES).
    None without an anchor, and under semantic_only (it is collaborative input).
    sampling: the sampler's anchor, which under model.anchor_at_sampling = "initial" has the
    untrained profile and scale instead of the trained ones.
    src_feats: the source table's `features()`, when the caller has them.
    """
    if self.settings.anchor == "none" or self.settings.conditioning == "semantic_only":
      return None
    position, scale = self.anchor_position[...], self.anchor_scale[...]
    if sampling and self.settings.anchor_at_sampling == "initial":
      position = jnp.asarray(recency_profile(position.shape[0], self.settings.anchor_recency))
      scale = jnp.ones_like(scale)
    weights = jax.nn.softplus(position)[-src.shape[1]:]
    rows = self.src_table(src) if src_feats is None else src_feats[src]
    pooled = jnp.einsum("l,bld->bd", weights, rows)
    return scale * pooled

  def _around_anchor(self, anchor: jax.Array | None, out: jax.Array, which: int) -> jax.Array:
    """anchor + gate * out (which: 0 the guesser, 1 the denoiser); out itself without an anchor."""
    if anchor is None:
      return out
    return anchor + self.residual_gate[...][which] * out

  def guess(self, cond: Conditions, pathway: jax.Array, rng: jax.Array | None = None
            ) -> jax.Array:
    """The guesser's one-shot x0 [B, d] from the pooled conditions and the pathway embedding."""
    return self.guesser(jnp.concatenate([cond.collab_pooled, cond.sem_pooled, cond.clue_pooled,
                                         pathway], -1), rng)

  def score(self, x0_hat: jax.Array, tgt_feats: jax.Array | None = None) -> jax.Array:
    """[B, num_tgt_items] scores <x0_hat, e_i> (+ b_i with model.item_bias); column j is item j.

    tgt_feats: the target table's `features()`, when the caller has them."""
    items = self.tgt_table.all_items() if tgt_feats is None else tgt_feats[1:]
    scores = x0_hat @ items.T
    if self.tgt_bias is not None:
      scores = scores + self.tgt_bias[...][None, :]
    return scores

  def top_k(self, x0_hat: jax.Array, k: int, chunk: int | None = scoring.DEFAULT_CHUNK,
            tgt_feats: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The k best items per row by `score` (0-based indices, ties to the lower index, as
    `lax.top_k`), streamed over item chunks (`scoring.streaming_top_k`; chunk=None: all at once).
    tgt_feats: the target table's `features()`, when the caller has them (else each chunk's rows
    are looked up and their titles projected)."""
    def item_fn(idx):
      bias = self.tgt_bias[...][idx] if self.tgt_bias is not None else None
      return (self.tgt_table(idx + 1) if tgt_feats is None else tgt_feats[idx + 1]), bias
    return scoring.streaming_top_k(x0_hat, item_fn, self.tgt_table.num_items, k, chunk)

  # --- training -----------------------------------------------------------------------------------

  def loss(self, batch: Batch, rng: jax.Array, train: bool = True
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training objective on a pair batch; returns (scalar loss, metrics).

    Metrics: loss, rec_loss, alignment_loss, diffusion_loss (use_diffusion), guesser_loss (when the
    guesser is used), gate_load/<e> per expert (use_diffusion), residual_loss (model.anchor = "mf":
    the mean squared size of what the networks add to the anchor), rows (rows that count:
    weight > 0 and at least one target item).
    With train=False dropout and the CFG condition dropout are off (noise and t are still drawn).
    """
    r_cond, r_guess, r_diff, r_den, r_cfg = jax.random.split(rng, 5)
    # A row counts when it is an actual example with at least one target item (else it has no x0).
    has_target = jnp.any((batch["tgt"] > 0) & (batch["tgt_weight"] > 0), axis=1)
    weight = batch["weight"].astype(jnp.float32) * has_target
    real = batch["real"]
    row_w = weight * jnp.where(real == 1, 1.0, self.settings.pseudo_weight)
    num_rows = jnp.maximum(jnp.sum(weight), 1.0)
    # Every target item is scored below, so the whole table is projected once and every target
    # lookup of the step (clues, x0's sequence, the scores) reads its rows.
    tgt_feats = self.tgt_table.features()
    cond = self.conditions(batch, r_cond if train else None, tgt_feats)
    pathway = self.pathway(real)
    x0 = self.target_repr(batch["tgt"], batch["tgt_weight"], tgt_feats)
    anchor = self.anchor(batch["src"])

    metrics: dict[str, jax.Array] = {"rows": jnp.sum(weight)}
    total = jnp.zeros(())
    guess = None
    residual_rows = jnp.zeros(weight.shape)  # what the networks add to the anchor, per row
    if self.settings.use_guesser or not self.settings.use_diffusion:
      guess = self._around_anchor(anchor, self.guess(cond, pathway, r_guess if train else None), 0)
      if anchor is not None:
        residual_rows = residual_rows + jnp.mean((guess - anchor) ** 2, -1)
      guess_loss = _weighted_mean(jnp.mean((guess - x0) ** 2, -1), row_w, num_rows)
      metrics["guesser_loss"] = guess_loss
      total += self.settings.guesser_weight * guess_loss
      if self.settings.use_diffusion:
        # The guess starts the reverse chain: train it to rank as well as to match x0.
        guess_rec = _weighted_mean(
            self._rec_rows(guess, batch["tgt"], batch["tgt_weight"], tgt_feats), row_w, num_rows)
        metrics["guesser_rec_loss"] = guess_rec
        total += self.settings.guesser_rec_weight * guess_rec

    if self.settings.use_diffusion:
      if self.settings.from_guess_share > 0 and guess is not None:
        r_diff, r_from_guess = jax.random.split(r_diff)
      x_t, t, _ = diffusion.training_targets(self.schedule(), x0, r_diff)
      if self.settings.from_guess_share > 0 and guess is not None:
        x_t, t = self._from_guess(x_t, t, guess, r_from_guess)
      drop = None
      if self.settings.conditioning == "cfg" and train:
        drop = jax.random.bernoulli(r_cfg, self.settings.cfg_dropout, (x0.shape[0],))
      x0_hat, gate = self.denoiser(x_t, t, cond, pathway, r_den if train else None, drop)
      x0_hat = self._around_anchor(anchor, x0_hat, 1)
      if anchor is not None:
        residual_rows = residual_rows + jnp.mean((x0_hat - anchor) ** 2, -1)
      diff_loss = _weighted_mean(jnp.mean((x0_hat - x0) ** 2, -1), row_w, num_rows)
      metrics["diffusion_loss"] = diff_loss
      total += diff_loss
      load = jnp.sum(gate * weight[:, None], axis=0) / num_rows
      for e in range(gate.shape[1]):
        metrics[f"gate_load/{e}"] = load[e]
    else:
      x0_hat = guess

    rec_loss = _weighted_mean(
        self._rec_rows(x0_hat, batch["tgt"], batch["tgt_weight"], tgt_feats), row_w, num_rows)
    metrics["rec_loss"] = rec_loss
    total += self.settings.rec_weight * rec_loss

    align_loss = _weighted_mean(self._alignment_rows(x0_hat, x0, weight), row_w, num_rows)
    metrics["alignment_loss"] = align_loss
    if self.settings.use_alignment:
      total += self.settings.alignment_weight * align_loss
    if anchor is not None:
      # The networks are a correction to the all-user anchor: fitting the overlap users' pairs with
      # a large residual is what loses on test (BUILD_NOTES, issue 12), so its size is penalised.
      residual = _weighted_mean(residual_rows, row_w, num_rows)
      metrics["residual_loss"] = residual
      total += self.settings.residual_weight * residual
    metrics["loss"] = total
    return total, metrics

  def _from_guess(self, x_t: jax.Array, t: jax.Array, guess: jax.Array, rng: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
    """(x_t, t) with a train.from_guess_share of the rows replaced by the guess (gradient stopped)
    noised to a t in [0, T'), the inputs the sampler gives the denoiser; the target stays x0."""
    s = self.settings
    r_pick, r_t, r_noise = jax.random.split(rng, 3)
    t_g = jax.random.randint(r_t, t.shape, 0, s.guess_start_step, dtype=t.dtype)
    noise = jax.random.normal(r_noise, guess.shape, guess.dtype)
    x_g = diffusion.q_sample(self.schedule(), jax.lax.stop_gradient(guess), t_g, noise)
    pick = jax.random.bernoulli(r_pick, s.from_guess_share, t.shape)
    return jnp.where(pick[:, None], x_g, x_t), jnp.where(pick, t_g, t)

  def joint_loss(self, batch: Batch, batch_src: Batch, batch_tgt: Batch, rng: jax.Array,
                 train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`loss` on a pair batch plus joint_encoder_weight x `encoder_loss` on single-domain batches."""
    r_pair, r_enc = jax.random.split(rng)
    total, metrics = self.loss(batch, r_pair, train)
    enc, enc_metrics = self.encoder_loss(batch_src, batch_tgt, r_enc, train)
    total = total + self.settings.joint_encoder_weight * enc
    return total, {**metrics, **enc_metrics, "loss": total}

  def _rec_rows(self, x0_hat: jax.Array, tgt: jax.Array, tgt_weight: jax.Array,
                tgt_feats: jax.Array) -> jax.Array:
    """Per-row softmax CE over all target items, averaged over the row's weighted target items."""
    logits = self.score(x0_hat, tgt_feats)  # [B, N]
    w = tgt_weight * (tgt > 0)
    w_sum = jnp.sum(w, axis=-1)
    w = w / jnp.maximum(w_sum, 1e-8)[:, None]
    tgt_logits = jnp.take_along_axis(logits, jnp.maximum(tgt - 1, 0), axis=1)
    rows = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(w * tgt_logits, axis=-1)
    return jnp.where(w_sum > 0, rows, 0.0)  # A row without target items has nothing to rank.

  def _alignment_rows(self, x0_hat: jax.Array, x0: jax.Array, weight: jax.Array) -> jax.Array:
    """Per-row InfoNCE: row i's positive is x0_i, its negatives the other actual rows' x0."""
    def unit(x):
      return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    logits = unit(x0_hat) @ unit(x0).T / self.settings.alignment_temperature
    logits = jnp.where((weight > 0)[None, :], logits, -1e30)  # Padding rows are no negatives.
    return jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)

  # --- inference ----------------------------------------------------------------------------------

  def item_features(self) -> ItemFeatures:
    """Both tables projected once (see `ItemFeatures`); None for a table without titles. (The
    source titles' projection appears in both `features()` and `title_features()`; under jit XLA
    computes it once.)"""
    src = (self.src_table.features(), self.src_table.title_features()) if (
        self.src_table.has_titles) else (None, None)
    tgt = self.tgt_table.features() if self.tgt_table.has_titles else None
    return ItemFeatures(src=src[0], src_title=src[1], tgt=tgt)

  def sampling_denoiser(self, cond: Conditions, pathway: jax.Array, cached: bool = True,
                        cfg_batched: bool | None = None):
    """The reverse chain's `denoise_fn(x_t, t) -> x0_hat` for a batch's conditions.

    cached=True (the default) runs `Denoiser.prepare` once here, so the condition-only work (token
    LayerNorms, cross-attention keys and values, gate, condition parts of the fusion) is not
    redone at every step; cached=False calls the whole denoiser per step (the reference, equal up
    to float rounding). The samplers give every row the same step, so the step embedding is
    computed once per step. cfg_batched picks CFG's form: one call over the stacked conditional
    and null conditions (True) or two that share the x_t part (False); None picks by backend
    (two on CPU, where they measured faster; one elsewhere).
    """
    batch_size = pathway.shape[0]
    null = jnp.ones((batch_size,), bool)
    if not cached:
      def denoise_fn(x_t, t):
        x0_hat, _ = self.denoiser(x_t, t, cond, pathway)
        if self.settings.conditioning == "cfg":
          x0_uncond, _ = self.denoiser(x_t, t, cond, pathway, drop_cond=null)
          x0_hat = diffusion.cfg_combine(x0_hat, x0_uncond, self.settings.cfg_weight)
        return x0_hat
      return denoise_fn

    cache = self.denoiser.prepare(cond, pathway)
    if self.settings.conditioning == "cfg":
      if cfg_batched is None:
        cfg_batched = jax.default_backend() != "cpu"
      cache_null = self.denoiser.prepare(cond, pathway, drop_cond=null)
      cfg_weight = self.settings.cfg_weight
      return lambda x_t, t: self.denoiser.step_cfg(x_t, t[0], cache, cache_null, cfg_weight,
                                                   batched=cfg_batched)
    return lambda x_t, t: self.denoiser.step(x_t, t[0], cache)[0]

  def sample(self, batch: Batch, rng: jax.Array, sampler: str | None = None,
             steps: int | None = None, cached: bool = True,
             feats: ItemFeatures | None = None) -> jax.Array:
    """Generates x0_hat [B, d] for an eval (or pair) batch on the real pathway.

    Args:
      batch: needs src, clue, clue_sim, summary, has_summary.
      rng: key for the start noise (and DDPM's per-step noise).
      sampler: "ddim" or "ddpm" (static); default config.model.sampler.
      steps: DDIM steps S (static); default config.model.sample_steps, capped at the chain length
        (T' with the guesser, T without). Ignored by DDPM, which visits every step.
      cached: compute the condition-only work once per batch (see `sampling_denoiser`).
      feats: the item tables' features (`item_features`), when the caller has them: the clue
        tokens, the source encoder's inputs and the title tokens are then gathered from them.
    """
    sampler = sampler or self.settings.sampler
    if sampler not in SAMPLERS:
      raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if feats is None:
      feats = ItemFeatures(src=None, src_title=None, tgt=None)
    src_feats = None if feats.src is None else (feats.src, feats.src_title)
    cond = self.conditions(batch, tgt_feats=feats.tgt, src_feats=src_feats)
    batch_size = batch["src"].shape[0]
    pathway = self.pathway(jnp.ones((batch_size,), jnp.int32))
    anchor = self.anchor(batch["src"], sampling=True, src_feats=feats.src)
    guess = None
    if self.settings.use_guesser or not self.settings.use_diffusion:
      guess = self._around_anchor(anchor, self.guess(cond, pathway), 0)
    if not self.settings.use_diffusion:
      return guess

    chain_fn = self.sampling_denoiser(cond, pathway, cached)
    denoise_fn = lambda x_t, t: self._around_anchor(anchor, chain_fn(x_t, t), 1)
    s = self.settings
    start = s.guess_start_step if s.use_guesser else s.diffusion_steps
    kwargs = dict(x_start=guess, start_step=start,
                  shape=None if self.settings.use_guesser else (batch_size, self.settings.d))
    if sampler == "ddpm":
      return diffusion.ddpm_sample(denoise_fn, self.schedule(), rng, **kwargs)
    steps = min(steps or self.settings.sample_steps, start)
    return diffusion.ddim_sample(denoise_fn, self.schedule(), rng, num_steps=steps, **kwargs)
