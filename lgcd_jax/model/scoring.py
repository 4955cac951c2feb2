"""Top-k over a catalogue in item chunks, without materialising the [batch, items] score matrix.

`streaming_top_k` scores the catalogue chunk by chunk inside one `lax.scan`, so its working memory
is O(batch x (chunk + k x block)) plus one chunk of item features, whatever the catalogue size.
It keeps a running top-k of item *blocks* (`block` consecutive items) by their best score, with
the blocks' scores, and takes the item top-k of those k blocks at the end. That is exact: every
item of the top-k scores at least the k-th best score, so its block's best does too, and at most
k blocks have a best that high (ties: see `streaming_top_k`). On the CPU a `lax.top_k` over
[batch, k + chunk] per chunk cost 1.7x the scoring matmul; over [batch, k + chunk / block] it
costs next to nothing (BUILD_NOTES, issue 11, fourteenth session).

This is the serving / benchmarking path (`recommend`, `bench`). Evaluation needs every score (ranks
of held-out items among sampled negatives, full-ranking metrics), so it keeps `LGCD.score`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# Chunk width when a caller gives none, and items per block: the fastest of chunks 1024 / 2048 /
# 4096 / 8192 and blocks 16 / 32 / 64 / 128 measured on the 2-core CPU at a group of 256 users,
# d = 64, 27,637 items (BUILD_NOTES, "Issue 11").
DEFAULT_CHUNK = 2048
DEFAULT_BLOCK = 32

# (item indices int32 [C], 0-based) -> (item features [C, d], per-item score offsets [C] or None).
ItemFn = Callable[[jax.Array], tuple[jax.Array, jax.Array | None]]


def full_top_k(x: jax.Array, item_fn: ItemFn, num_items: int, k: int
               ) -> tuple[jax.Array, jax.Array]:
  """The reference: every score at once, then `lax.top_k` (float32 scores)."""
  emb, bias = item_fn(jnp.arange(num_items, dtype=jnp.int32))
  scores = x @ emb.T
  if bias is not None:
    scores = scores + bias[None, :]
  return jax.lax.top_k(scores.astype(jnp.float32), k)


def streaming_top_k(x: jax.Array, item_fn: ItemFn, num_items: int, k: int,
                    chunk: int | None = DEFAULT_CHUNK, block: int = DEFAULT_BLOCK
                    ) -> tuple[jax.Array, jax.Array]:
  """(values float32 [B, k], item indices int32 [B, k]) of the k best items per row of x [B, d],
  equal to `full_top_k`'s, ties included (equal scores: the lower index first).

  Score of item i: <x, emb_i> + bias_i, with (emb, bias) from item_fn. chunk: items per scan step
  (static), rounded up to a multiple of block; None or >= num_items gives `full_top_k`. The last
  chunk is padded with -inf scores. block: items per block (static; capped at chunk).

  Ties: the running merge is `lax.top_k` over [the k kept blocks, this chunk's blocks]; the kept
  blocks come from earlier chunks (lower indices) and, among equal bests, stay in index order, so
  the k blocks kept are the k best by (best score, lower index). Those hold the lowest-index items
  of every score the item top-k takes, and the last `lax.top_k` sees their items in index order.
  """
  if not 1 <= k <= num_items:
    raise ValueError(f"k must be in [1, {num_items}], got {k}")
  if chunk is None or chunk >= num_items:
    return full_top_k(x, item_fn, num_items, k)
  chunk = max(int(chunk), k)
  block = max(1, min(int(block), chunk))
  chunk = -(-chunk // block) * block
  blocks_per_chunk = chunk // block
  num_chunks = -(-num_items // chunk)
  b = x.shape[0]

  def body(carry, start):
    best, best_scores, best_ids = carry  # [B, k] block bests, [B, k, block] scores, [B, k] ids
    idx = start + jnp.arange(chunk, dtype=jnp.int32)
    emb, bias = item_fn(jnp.minimum(idx, num_items - 1))
    s = x @ emb.T
    if bias is not None:
      s = s + bias[None, :]
    s = jnp.where((idx < num_items)[None, :], s.astype(jnp.float32), -jnp.inf)
    s = s.reshape(b, blocks_per_chunk, block)
    ids = start // block + jnp.arange(blocks_per_chunk, dtype=jnp.int32)
    cand_best = jnp.concatenate([best, jnp.max(s, axis=2)], axis=1)
    cand_scores = jnp.concatenate([best_scores, s], axis=1)
    cand_ids = jnp.concatenate([best_ids, jnp.broadcast_to(ids[None], (b, blocks_per_chunk))], 1)
    best, pos = jax.lax.top_k(cand_best, k)
    return (best, jnp.take_along_axis(cand_scores, pos[..., None], axis=1),
            jnp.take_along_axis(cand_ids, pos, axis=1)), None

  # Placeholder blocks (-inf, ids past the last block) lose to every block with a finite best.
  init = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.full((b, k, block), -jnp.inf, jnp.float32),
          jnp.full((b, k), num_chunks * blocks_per_chunk, jnp.int32))
  starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
  (_, scores, ids), _ = jax.lax.scan(body, init, starts)
  order = jnp.argsort(ids, axis=1)  # the kept blocks' items in index order, for the tie rule
  ids = jnp.take_along_axis(ids, order, axis=1)
  scores = jnp.take_along_axis(scores, order[..., None], axis=1).reshape(b, k * block)
  items = (ids[..., None] * block + jnp.arange(block, dtype=jnp.int32)).reshape(b, k * block)
  values, pos = jax.lax.top_k(scores, k)
  return values, jnp.take_along_axis(items, pos, axis=1)
