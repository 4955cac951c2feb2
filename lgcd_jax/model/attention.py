"""Masked multi-head attention and the pre-LN cross-attention block of the denoiser.

Masking: a boolean mask marks the keys a query may attend to. Masked logits are replaced by a large
finite negative (never -inf), and a query row whose keys are all masked gets all-zero attention
weights, so its output is the output projection's bias: finite, with finite gradients, and
independent of whatever the masked keys hold.

Dropout convention (shared by every module of the model): modules hold no RNG state. `__call__`
takes `rng: jax.Array | None`; `None` means deterministic (evaluation), a key means training-mode
dropout. Keys are split per sub-layer with `split_rng`, so a module stays a pure function of
(parameters, inputs, rng) and works unchanged after `nnx.split` / `nnx.merge` under `jax.jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_MASKED_LOGIT = -1e30


def split_rng(rng: jax.Array | None, n: int) -> list[jax.Array | None]:
  """n independent keys from rng, or n Nones when rng is None (deterministic mode)."""
  if rng is None:
    return [None] * n
  return list(jax.random.split(rng, n))


def dropout(layer: nnx.Dropout, x: jax.Array, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout at `layer.rate` when a key is given, else x unchanged.

  The keep mask is drawn from random bytes, four per 32-bit word. `nnx.Dropout` (like
  `jax.random.bernoulli`) hashes one threefry word per element, and on the CPU that hashing was
  17 % of a train step (BUILD_NOTES, issue 11); bytes cut it fourfold. The rate is rounded to a
  multiple of 1/256 and the kept values are scaled by the rounded keep probability, so E[out] = x.
  """
  if rng is None or layer.rate == 0.0:
    return x
  cut = round(layer.rate * 256)  # a byte below `cut` drops its element
  if cut >= 256:
    return jnp.zeros_like(x)
  size = x.size
  words = jax.random.bits(rng, (-(-size // 4),), jnp.uint32)
  draws = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:size].reshape(x.shape)
  return jnp.where(draws >= cut, x * (256.0 / (256 - cut)), jnp.zeros((), x.dtype))


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to mask; all-masked rows give all-zero weights."""
  logits = jnp.where(mask, logits, _MASKED_LOGIT)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.where(jnp.any(mask, axis=-1, keepdims=True), probs, 0.0)


class MultiHeadAttention(nnx.Module):
  """Multi-head scaled dot-product attention of queries over keys/values with a boolean mask."""

  def __init__(self, d: int, heads: int, dropout_rate: float, *, rngs: nnx.Rngs):
    if d % heads:
      raise ValueError(f"d={d} is not divisible by heads={heads}")
    self.heads = int(heads)
    self.head_dim = d // heads
    self.query = nnx.Linear(d, d, rngs=rngs)
    self.key = nnx.Linear(d, d, rngs=rngs)
    self.value = nnx.Linear(d, d, rngs=rngs)
    self.out = nnx.Linear(d, d, rngs=rngs)
    self.attn_dropout = nnx.Dropout(dropout_rate)

  def __call__(self, x_q: jax.Array, x_kv: jax.Array, mask: jax.Array,
               rng: jax.Array | None = None) -> jax.Array:
    """Attends x_q [B, Lq, d] over x_kv [B, Lk, d].

    Args:
      x_q: queries.
      x_kv: keys and values.
      mask: bool, broadcastable to [B, Lq, Lk]; True where the query may see the key.
      rng: dropout key (None: deterministic).

    Returns:
      [B, Lq, d].
    """
    return self.attend(x_q, *self.keys_values(x_kv), mask, rng)

  def self_attend(self, x: jax.Array, mask: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """`self(x, x, mask, rng)` with the queries, keys and values of x from one [d, 3d] matmul
    instead of three [d, d] ones (the source encoder's blocks, where the narrow matmuls ran far
    below the CPU's peak). Equal up to float rounding."""
    kernel = jnp.concatenate([p.kernel[...] for p in (self.query, self.key, self.value)], axis=1)
    bias = jnp.concatenate([p.bias[...] for p in (self.query, self.key, self.value)])
    q, k, v = jnp.split(x @ kernel + bias, 3, axis=-1)
    return self._attend_heads(self._heads(q), self._heads(k), self._heads(v), mask, rng)

  def keys_values(self, x_kv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The per-head keys and values [B, heads, Lk, head_dim] of x_kv [B, Lk, d].

    They depend on the key tokens only, so a caller attending over the same tokens many times (the
    reverse chain) computes them once and passes them to `attend`. Heads lead the token axis: the
    batched matmuls of `attend` then read them without a transpose (on the CPU a transpose per
    reverse step cost more than the whole attention).
    """
    return self._heads(self.key(x_kv)), self._heads(self.value(x_kv))

  def _heads(self, x: jax.Array) -> jax.Array:
    """[B, L, d] -> [B, heads, L, head_dim]."""
    b, length, _ = x.shape
    return x.reshape(b, length, self.heads, self.head_dim).transpose(0, 2, 1, 3)

  def attend(self, x_q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
             rng: jax.Array | None = None) -> jax.Array:
    """Attends x_q [B, Lq, d] over keys/values [B, heads, Lk, head_dim] (`keys_values`); mask as in
    `__call__`."""
    return self._attend_heads(self._heads(self.query(x_q)), k, v, mask, rng)

  def _attend_heads(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                    rng: jax.Array | None) -> jax.Array:
    """Per-head queries [B, heads, Lq, head_dim] over keys/values -> the projected output."""
    b, _, lq, _ = q.shape
    lk = k.shape[2]
    logits = jnp.einsum("bhqc,bhkc->bhqk", q, k) * (self.head_dim ** -0.5)
    mask = jnp.broadcast_to(mask, (b, lq, lk))[:, None]  # Same mask for every head.
    probs = dropout(self.attn_dropout, masked_softmax(logits, mask), rng)
    ctx = jnp.einsum("bhqk,bhkc->bqhc", probs, v).reshape(b, lq, self.heads * self.head_dim)
    return self.out(ctx)


class FeedForward(nnx.Module):
  """Position-wise MLP d -> hidden -> d with GELU."""

  def __init__(self, d: int, hidden: int, dropout_rate: float, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, d, rngs=rngs)
    self.drop = nnx.Dropout(dropout_rate)

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    return self.fc2(dropout(self.drop, jax.nn.gelu(self.fc1(x)), rng))


class CrossAttentionBlock(nnx.Module):
  """Pre-LN block: queries attend over condition tokens, then an FFN; both with residuals.

  q <- q + Attn(LN(q), LN(tokens), key_mask);  q <- q + FFN(LN(q)).
  """

  def __init__(self, d: int, heads: int, dropout_rate: float, *, rngs: nnx.Rngs,
               ffn_mult: int = 4):
    self.ln_q = nnx.LayerNorm(d, rngs=rngs)
    self.ln_kv = nnx.LayerNorm(d, rngs=rngs)
    self.attn = MultiHeadAttention(d, heads, dropout_rate, rngs=rngs)
    self.ln_ff = nnx.LayerNorm(d, rngs=rngs)
    self.ff = FeedForward(d, ffn_mult * d, dropout_rate, rngs=rngs)
    self.drop = nnx.Dropout(dropout_rate)

  def __call__(self, q: jax.Array, tokens: jax.Array, key_mask: jax.Array,
               rng: jax.Array | None = None) -> jax.Array:
    """q [B, Lq, d] over tokens [B, Lk, d]; key_mask bool [B, Lk]. Returns [B, Lq, d]."""
    return self.step(q, self.keys_values(tokens), key_mask, rng)

  def keys_values(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """What the block computes from the tokens alone: the keys and values of LN(tokens).

    The denoiser's condition tokens are fixed along the reverse chain, so sampling computes this
    once per batch (`Denoiser.prepare`) instead of at every step.
    """
    return self.attn.keys_values(self.ln_kv(tokens))

  def step(self, q: jax.Array, kv: tuple[jax.Array, jax.Array], key_mask: jax.Array,
           rng: jax.Array | None = None) -> jax.Array:
    """`__call__` with the tokens' keys and values precomputed by `keys_values`."""
    r_attn, r_drop1, r_ff, r_drop2 = split_rng(rng, 4)
    h = self.attn.attend(self.ln_q(q), kv[0], kv[1], key_mask[:, None, :], r_attn)
    q = q + dropout(self.drop, h, r_drop1)
    return q + dropout(self.drop, self.ff(self.ln_ff(q), r_ff), r_drop2)


def stacked_keys_values(blocks, tokens: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
  """Every block's `keys_values(tokens)`, for blocks that attend over the same tokens, from one
  matmul.

  Block b's LayerNorm is n(x) * s_b + c_b, with n(x) the normalisation the blocks share, so its
  keys are n(x) (s_b[:, None] * W_k) + (c_b W_k + b_k), and likewise its values: one
  [T, d] x [d, 2 * d * blocks] matmul instead of 2 * blocks [T, d] x [d, d] ones, which on the CPU
  ran far below the matmul peak (BUILD_NOTES, issue 11, fifteenth session). Equal to the
  per-block computation up to float rounding.
  """
  if not blocks:
    return ()
  lns = [b.ln_kv for b in blocks]
  eps = lns[0].epsilon
  if any(ln.epsilon != eps or ln.scale is None or ln.bias is None for ln in lns):
    return tuple(b.keys_values(tokens) for b in blocks)
  x = tokens.astype(jnp.promote_types(tokens.dtype, jnp.float32))
  mean = jnp.mean(x, axis=-1, keepdims=True)
  # flax's LayerNorm (use_fast_variance): E[x^2] - E[x]^2, clipped at zero.
  var = jnp.maximum(jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean, 0.0)
  normed = ((x - mean) * jax.lax.rsqrt(var + eps)).astype(tokens.dtype)
  kernels, biases = [], []
  for b in blocks:
    scale, shift = b.ln_kv.scale[...], b.ln_kv.bias[...]
    for proj in (b.attn.key, b.attn.value):
      w = proj.kernel[...]
      kernels.append(scale[:, None] * w)
      biases.append(shift @ w + proj.bias[...])
  out = normed @ jnp.concatenate(kernels, axis=1) + jnp.concatenate(biases)
  parts = jnp.split(out, 2 * len(blocks), axis=-1)
  return tuple((b.attn._heads(parts[2 * i]), b.attn._heads(parts[2 * i + 1]))
               for i, b in enumerate(blocks))
