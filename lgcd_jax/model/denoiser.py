"""The denoiser: predicts x0 from the noisy x_t, the diffusion step and the condition tokens.

Per call: a sinusoidal embedding of the step t goes through an MLP and is summed with the pathway
embedding (real / pseudo) into one conditioning vector `step`. Then, by conditioning variant:

  cross_attention  the query token proj(x_t) + step attends, through `layers` pre-LN cross-attention
                   blocks, over the collaborative tokens (per-position source-encoder states) and,
                   through a separate stack, over the semantic tokens (source titles, clue items,
                   summary). The two final query states, layer-normed, are the two read-outs.
  collab_only /    the same, with the semantic (resp. collaborative) tokens masked out by the caller
  semantic_only    (`LGCD.conditions` builds all-False masks and zero pooled vectors for them).
  linear           no attention: the read-outs are the layer-normed pooled conditions, so the
                   fusion MLP sees [x_t, pooled collab, pooled semantic, step] (DreamRec-style).
  cfg              linear, plus a learned null condition: rows flagged by `drop_cond` have both
                   pooled conditions replaced by learned null vectors (the pathway is kept: it picks
                   the target space, not the user). Training drops rows at random (cfg_dropout);
                   sampling combines conditional and unconditional predictions.

Finally `MoEFusion` maps [x_t, collab read-out, semantic read-out, pooled clue, step] to x0_hat,
gated by [pooled collab, pooled semantic, pooled clue, pathway]. The pooled clue (similarity-weighted
mean of the clue items' target features) goes straight to the fusion and the gate, so the clue's
ranking signal does not have to survive attention pooling. Dropout follows `attention.py` (rng=None: deterministic).

Two ways to call it, equal up to float rounding:
  `__call__`        everything from the inputs: one call of training's loss.
  `prepare`+`step`  the reverse chain's form. `prepare(cond, pathway)` computes, once per batch, all
                    that depends on the conditions alone: the token LayerNorms with the keys and
                    values of every cross-attention block, the read-outs of the linear variants, the
                    gate, and the condition and pathway parts of the experts' first layer. `step`
                    then does only the x_t- and t-dependent work. With a scalar t (every row at the
                    same step, as the samplers have it) the step embedding is computed once.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from lgcd_jax.model.attention import CrossAttentionBlock, split_rng, stacked_keys_values
from lgcd_jax.model.diffusion import cfg_combine
from lgcd_jax.model.moe import MoEFusion

CONDITIONINGS = ("cross_attention", "linear", "cfg", "collab_only", "semantic_only")
ATTENTION_CONDITIONINGS = ("cross_attention", "collab_only", "semantic_only")


@flax.struct.dataclass
class Conditions:
  """The condition of one batch, as built by `LGCD.conditions`."""
  collab_tokens: jax.Array  # [B, Lc, d] per-position source-encoder states
  collab_mask: jax.Array  # bool [B, Lc]
  sem_tokens: jax.Array  # [B, Ls, d] source titles, clue items, summary
  sem_mask: jax.Array  # bool [B, Ls]
  collab_pooled: jax.Array  # [B, d] the source encoder's last state
  sem_pooled: jax.Array  # [B, d] masked mean of the semantic tokens
  # [B, d] clue-similarity-weighted mean of the clue items' target-table features: the clue's
  # ranking signal in the very space items are scored in (<clue_pooled, e_i> favours clue items).
  # None (e.g. hand-built conditions) reads as zeros.
  clue_pooled: jax.Array | None = None


@flax.struct.dataclass
class DenoiserCache:
  """The condition-only part of the denoiser's computation for one batch (`Denoiser.prepare`)."""
  pathway: jax.Array  # [B, d]
  collab_kv: tuple  # per collaborative block: (keys, values) [B, heads, Lc, head_dim]
  collab_mask: jax.Array | None  # bool [B, Lc]
  sem_kv: tuple  # per semantic block: (keys, values) [B, heads, Ls, head_dim]
  sem_mask: jax.Array | None  # bool [B, Ls]
  # [B, E, hidden]: the experts' first-layer pre-activation from everything but x_t, the
  # attention read-outs and the step embedding (i.e. the bias, the pooled clue, the pathway and,
  # for linear / cfg, the pooled read-outs).
  fused_const: jax.Array
  gate: jax.Array  # [B, E] gate probabilities
  # The first-layer rows a step multiplies (`MoEFusion.first_layer_rows`), laid out once here
  # rather than at every step: x_t's (and the read-outs') [w, E * H], the step embedding's [d, E * H].
  rows_x: jax.Array | None = None
  rows_step: jax.Array | None = None


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [B, dim] of integer steps t [B] (Transformer / DDPM style)."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class Denoiser(nnx.Module):
  """x0-predicting denoiser: (x_t, t, conditions, pathway) -> (x0_hat [B, d], gate probs [B, E])."""

  def __init__(self, d: int, heads: int, layers: int, num_experts: int, *, rngs: nnx.Rngs,
               conditioning: str = "cross_attention", use_moe: bool = True,
               dropout_rate: float = 0.0):
    if conditioning not in CONDITIONINGS:
      raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
    self.d = int(d)
    self.conditioning = conditioning
    self.uses_attention = conditioning in ATTENTION_CONDITIONINGS
    self.step_fc1 = nnx.Linear(d, 2 * d, rngs=rngs)
    self.step_fc2 = nnx.Linear(2 * d, d, rngs=rngs)
    if self.uses_attention:
      self.x_proj = nnx.Linear(d, d, rngs=rngs)
      self.collab_blocks = nnx.List(
          [CrossAttentionBlock(d, heads, dropout_rate, rngs=rngs) for _ in range(layers)])
      self.sem_blocks = nnx.List(
          [CrossAttentionBlock(d, heads, dropout_rate, rngs=rngs) for _ in range(layers)])
    else:
      self.x_proj = None
      self.collab_blocks = nnx.List([])
      self.sem_blocks = nnx.List([])
    self.ln_collab = nnx.LayerNorm(d, rngs=rngs)
    self.ln_sem = nnx.LayerNorm(d, rngs=rngs)
    if conditioning == "cfg":
      init = nnx.initializers.normal(d**-0.5)
      self.null_collab = nnx.Param(init(rngs.params(), (d,)))
      self.null_sem = nnx.Param(init(rngs.params(), (d,)))
    else:
      self.null_collab = None
      self.null_sem = None
    self.fusion = MoEFusion(5 * d, d, num_experts, 4 * d, use_moe=use_moe,
                            dropout_rate=dropout_rate, rngs=rngs)

  def step_embedding(self, t: jax.Array) -> jax.Array:
    """MLP of the sinusoidal embedding of t [B] -> [B, d]."""
    return self.step_fc2(jax.nn.silu(self.step_fc1(timestep_embedding(t, self.d))))

  def __call__(self, x_t: jax.Array, t: jax.Array, cond: Conditions, pathway: jax.Array,
               rng: jax.Array | None = None, drop_cond: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """Predicts x0.

    Args:
      x_t: [B, d] noisy representation.
      t: int32 [B] diffusion steps (0..T-1).
      cond: the batch's conditions.
      pathway: [B, d] pathway embedding.
      rng: dropout key (None: deterministic).
      drop_cond: bool [B], "cfg" only: rows whose condition is replaced by the null condition.

    Returns:
      (x0_hat [B, d], gate probs [B, E]).
    """
    step = self.step_embedding(t) + pathway
    collab_pooled, sem_pooled, clue_pooled = self._pooled(cond, drop_cond)

    n = len(self.collab_blocks)
    keys = split_rng(rng, 2 * n + 1)
    if self.uses_attention:
      query = (self.x_proj(x_t) + step)[:, None, :]
      collab, sem = query, query
      for block, r in zip(self.collab_blocks, keys[:n]):
        collab = block(collab, cond.collab_tokens, cond.collab_mask, r)
      for block, r in zip(self.sem_blocks, keys[n:2 * n]):
        sem = block(sem, cond.sem_tokens, cond.sem_mask, r)
      collab, sem = collab[:, 0], sem[:, 0]
    else:
      collab, sem = collab_pooled, sem_pooled
    collab, sem = self.ln_collab(collab), self.ln_sem(sem)

    fused_in = jnp.concatenate([x_t, collab, sem, clue_pooled, step], axis=-1)
    gate_in = jnp.concatenate([collab_pooled, sem_pooled, clue_pooled, pathway], axis=-1)
    return self.fusion(fused_in, gate_in, keys[-1])

  def _pooled(self, cond: Conditions, drop_cond: jax.Array | None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(collab_pooled, sem_pooled, clue_pooled) with drop_cond's rows nulled, as in `__call__`."""
    collab_pooled, sem_pooled = cond.collab_pooled, cond.sem_pooled
    clue_pooled = (cond.clue_pooled if cond.clue_pooled is not None
                   else jnp.zeros_like(collab_pooled))
    if drop_cond is not None:
      if self.conditioning != "cfg":
        raise ValueError("drop_cond is only meaningful with conditioning='cfg'")
      drop = drop_cond[:, None]
      collab_pooled = jnp.where(drop, self.null_collab[...][None], collab_pooled)
      sem_pooled = jnp.where(drop, self.null_sem[...][None], sem_pooled)
      clue_pooled = jnp.where(drop, 0.0, clue_pooled)
    return collab_pooled, sem_pooled, clue_pooled

  def prepare(self, cond: Conditions, pathway: jax.Array, drop_cond: jax.Array | None = None
              ) -> DenoiserCache:
    """Everything of a call that depends on the conditions alone, for `step` to reuse."""
    d = self.d
    collab_pooled, sem_pooled, clue_pooled = self._pooled(cond, drop_cond)
    gate_in = jnp.concatenate([collab_pooled, sem_pooled, clue_pooled, pathway], axis=-1)
    gate = self.fusion.gate_probs(gate_in, collab_pooled.shape[0], collab_pooled.dtype)
    # fused_in = [x_t, collab read-out, sem read-out, clue_pooled, step]; step = emb(t) + pathway.
    if self.uses_attention:
      collab_kv = stacked_keys_values(self.collab_blocks, cond.collab_tokens)
      sem_kv = stacked_keys_values(self.sem_blocks, cond.sem_tokens)
      const_in, start = jnp.concatenate([clue_pooled, pathway], -1), 3 * d
      collab_mask, sem_mask = cond.collab_mask, cond.sem_mask
    else:
      collab_kv = sem_kv = ()
      collab_mask = sem_mask = None
      const_in = jnp.concatenate([self.ln_collab(collab_pooled), self.ln_sem(sem_pooled),
                                  clue_pooled, pathway], -1)
      start = d
    fused_const = self.fusion.first_layer_part(const_in, start) + self.fusion.b1[...]
    x_width = 3 * d if self.uses_attention else d  # [x_t, read-outs] or x_t alone
    return DenoiserCache(pathway=pathway, collab_kv=collab_kv, collab_mask=collab_mask,
                         sem_kv=sem_kv, sem_mask=sem_mask, fused_const=fused_const, gate=gate,
                         rows_x=self.fusion.first_layer_rows(0, x_width),
                         rows_step=self.fusion.first_layer_rows(4 * d, d))

  def _step_pre(self, x_t: jax.Array, t: jax.Array, cache: DenoiserCache,
                keys: list) -> tuple[jax.Array, jax.Array]:
    """(the step-dependent first-layer part [B|1, E, H] shared by every cache, the rest [B, E, H])."""
    d = self.d
    t = jnp.asarray(t, jnp.int32)
    emb = self.step_embedding(t.reshape(-1))  # [1, d] for a scalar t, else [B, d]
    shared = self.fusion.first_layer_part(emb, 4 * d, cache.rows_step)
    if not self.uses_attention:
      return shared + self.fusion.first_layer_part(x_t, 0, cache.rows_x), None
    n = len(self.collab_blocks)
    query = (self.x_proj(x_t) + emb + cache.pathway)[:, None, :]
    collab, sem = query, query
    for block, kv, r in zip(self.collab_blocks, cache.collab_kv, keys[:n]):
      collab = block.step(collab, kv, cache.collab_mask, r)
    for block, kv, r in zip(self.sem_blocks, cache.sem_kv, keys[n:2 * n]):
      sem = block.step(sem, kv, cache.sem_mask, r)
    readout = jnp.concatenate([x_t, self.ln_collab(collab[:, 0]), self.ln_sem(sem[:, 0])], -1)
    return shared, self.fusion.first_layer_part(readout, 0, cache.rows_x)

  def step(self, x_t: jax.Array, t: jax.Array, cache: DenoiserCache,
           rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`__call__` with the condition-only work taken from `prepare`: (x0_hat [B, d], gate [B, E]).

    t: int32 [B] steps, or a scalar when every row is at the same step.
    """
    keys = split_rng(rng, 2 * len(self.collab_blocks) + 1)
    shared, rest = self._step_pre(x_t, t, cache, keys)
    pre = shared + cache.fused_const if rest is None else shared + rest + cache.fused_const
    return self.fusion.finish(pre, cache.gate, keys[-1])

  def step_cfg(self, x_t: jax.Array, t: jax.Array, cache_cond: DenoiserCache,
               cache_uncond: DenoiserCache, weight: float, batched: bool = False) -> jax.Array:
    """Classifier-free guided x0_hat (deterministic) from the conditional and null caches.

    batched=False: the x_t- and t-dependent first-layer part is computed once and both predictions
    finish separately; batched=True: one `step` over the two caches stacked along the batch.
    """
    if batched:
      rows = dict(rows_x=cache_cond.rows_x, rows_step=cache_cond.rows_step)  # no batch axis
      no_rows = dict(rows_x=None, rows_step=None)
      both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], 0), cache_cond.replace(**no_rows),
                          cache_uncond.replace(**no_rows)).replace(**rows)
      t = jnp.asarray(t)
      t2 = t if t.ndim == 0 else jnp.concatenate([t, t], 0)
      x0, _ = self.step(jnp.concatenate([x_t, x_t], 0), t2, both)
      x0_cond, x0_uncond = jnp.split(x0, 2, axis=0)
    else:
      if self.uses_attention:
        raise ValueError("step_cfg expects the linear 'cfg' conditioning")
      shared, _ = self._step_pre(x_t, t, cache_cond, [None])
      x0_cond, _ = self.fusion.finish(shared + cache_cond.fused_const, cache_cond.gate)
      x0_uncond, _ = self.fusion.finish(shared + cache_uncond.fused_const, cache_uncond.gate)
    return cfg_combine(x0_cond, x0_uncond, weight)
