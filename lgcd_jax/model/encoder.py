"""SASRec-style causal Transformer over one domain's item sequences, and its next-item objective.

Sequences are left-padded (the most recent item at position L-1). Learned positions are aligned to
the right end, so the most recent item always gets the last position embedding whatever L is.
Position t attends to valid positions <= t only (causal + key-padding mask), and hidden states are
zeroed at padded positions after every block, so padding never leaks into a valid position.

The encoder consumes item features, not indices: the caller looks them up in the domain's
`ItemTable` and passes it explicitly (the table is not owned by the encoder). Dropout follows the
model-wide convention of `attention.py`: `rng=None` is deterministic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lgcd_jax.model.attention import FeedForward, MultiHeadAttention, dropout, split_rng
from lgcd_jax.model.items import ItemTable


class SelfAttentionBlock(nnx.Module):
  """Pre-LN Transformer block: x <- x + Attn(LN(x)); x <- x + FFN(LN(x))."""

  def __init__(self, d: int, heads: int, dropout_rate: float, *, rngs: nnx.Rngs):
    self.ln_attn = nnx.LayerNorm(d, rngs=rngs)
    self.attn = MultiHeadAttention(d, heads, dropout_rate, rngs=rngs)
    self.ln_ff = nnx.LayerNorm(d, rngs=rngs)
    self.ff = FeedForward(d, 4 * d, dropout_rate, rngs=rngs)
    self.drop = nnx.Dropout(dropout_rate)

  def __call__(self, x: jax.Array, attn_mask: jax.Array, rng: jax.Array | None = None
               ) -> jax.Array:
    r_attn, r_drop1, r_ff, r_drop2 = split_rng(rng, 4)
    h = self.ln_attn(x)
    x = x + dropout(self.drop, self.attn.self_attend(h, attn_mask, r_attn), r_drop1)
    return x + dropout(self.drop, self.ff(self.ln_ff(x), r_ff), r_drop2)


class SequenceEncoder(nnx.Module):
  """Causal Transformer returning per-position states [B, L, d] (zeros at padding)."""

  def __init__(self, d: int, heads: int, layers: int, maxlen: int, dropout_rate: float, *,
               rngs: nnx.Rngs):
    self.maxlen = int(maxlen)
    self.pos_embedding = nnx.Embed(maxlen, d, embedding_init=nnx.initializers.normal(d**-0.5),
                                   rngs=rngs)
    self.emb_dropout = nnx.Dropout(dropout_rate)
    self.blocks = nnx.List(
        [SelfAttentionBlock(d, heads, dropout_rate, rngs=rngs) for _ in range(layers)])
    # A final LayerNorm keeps states at unit scale: they become the diffusion's x0, noised N(0, I).
    self.ln_out = nnx.LayerNorm(d, rngs=rngs)

  def __call__(self, emb: jax.Array, mask: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Encodes item features emb [B, L, d] with validity mask bool [B, L] (L <= maxlen)."""
    length = emb.shape[1]
    if length > self.maxlen:
      raise ValueError(f"sequence length {length} exceeds maxlen {self.maxlen}")
    keep = mask[..., None].astype(emb.dtype)
    positions = jnp.arange(self.maxlen - length, self.maxlen)
    r_emb, *r_blocks = split_rng(rng, 1 + len(self.blocks))
    x = dropout(self.emb_dropout, (emb + self.pos_embedding(positions)[None]) * keep, r_emb)
    causal = jnp.tril(jnp.ones((length, length), bool))
    attn_mask = causal[None] & mask[:, None, :]  # [B, query, key]
    for block, r in zip(self.blocks, r_blocks):
      x = block(x, attn_mask, r) * keep
    return self.ln_out(x) * keep


def last_state(states: jax.Array, mask: jax.Array) -> jax.Array:
  """The state [B, d] at each row's last valid position (zeros for an all-padding row)."""
  length = mask.shape[1]
  # Index of the last True: robust to any padding side, though batches are left-padded.
  last = length - 1 - jnp.argmax(mask[:, ::-1], axis=1)
  picked = jnp.take_along_axis(states, last[:, None, None], axis=1)[:, 0]
  return picked * jnp.any(mask, axis=1, keepdims=True).astype(states.dtype)


def next_item_loss(encoder: SequenceEncoder, table: ItemTable, seq: jax.Array, weight: jax.Array,
                   rng: jax.Array, num_negatives: int, train: bool = True) -> jax.Array:
  """Next-item softmax cross-entropy on a single-domain batch (scalar).

  Inputs are seq[:, :-1], targets seq[:, 1:] (items + 1). A position counts when both its input and
  its target are real items (a position whose input is padding has no history to predict from), and
  rows are weighted by `weight` (0 for padding rows). Scores are <state, item features>.

  Softmax choice: with 0 < num_negatives < N, the positive competes with num_negatives items drawn
  uniformly (with replacement) once per batch and shared by every position, a negative equal to the
  position's target being masked out. This keeps the cost at O(B L K d) for large catalogues
  (27k kitchen items). With num_negatives <= 0 or >= N the exact full softmax over all N items is
  used: for a small catalogue it is no dearer than sampling and has no sampling bias.

  Args:
    encoder: the domain's encoder.
    table: the same domain's item table.
    seq: int32 [B, maxlen + 1], left-padded items + 1.
    weight: float32 [B].
    rng: key for dropout and negative sampling.
    num_negatives: K (static).
    train: apply dropout.
  """
  r_drop, r_neg = jax.random.split(rng)
  inputs, targets = seq[:, :-1], seq[:, 1:]
  in_mask = inputs > 0
  feats = table(seq)  # one gather and title projection serves both the inputs and the targets
  states = encoder(feats[:, :-1], in_mask, r_drop if train else None)
  valid = (in_mask & (targets > 0)).astype(jnp.float32) * weight[:, None]
  num_items = table.num_items
  if 0 < num_negatives < num_items:
    pos_logit = jnp.sum(states * feats[:, 1:], axis=-1)  # [B, L]
    negatives = jax.random.randint(r_neg, (num_negatives,), 1, num_items + 1)
    neg_logits = jnp.einsum("bld,kd->blk", states, table(negatives))
    neg_logits = jnp.where(negatives[None, None, :] == targets[..., None], -1e30, neg_logits)
    logits = jnp.concatenate([pos_logit[..., None], neg_logits], axis=-1)
    ce = jax.nn.logsumexp(logits, axis=-1) - pos_logit
  else:
    logits = jnp.einsum("bld,nd->bln", states, table.all_items())
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets - 1, 0))
  return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1.0)
