"""Top-k over a catalogue in item chunks, without materialising the [batch, items] score matrix.

`streaming_top_k` scores the catalogue chunk by chunk inside one `lax.scan` and keeps a running
top-k, so its working memory is O(batch x (chunk + k)) plus one chunk of item features, whatever the
catalogue size. Its result equals `jax.lax.top_k` over the full scores, ties included: a merge
takes `lax.top_k` over [running top-k, chunk scores], in which every running entry comes from an
earlier chunk (a lower item index) and sits before the chunk, and within each part the order is by
index, so equal scores keep the lower index first, as `lax.top_k` does.

This is the serving / benchmarking path (`recommend`, `bench`). Evaluation needs every score (ranks
of held-out items among sampled negatives, full-ranking metrics), so it keeps `LGCD.score`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# Chunk width when a caller gives none: the fastest of 1024 / 2048 / 4096 / 8192 / 16384 / full
# measured on the 2-core CPU at batch 1024, d = 64, 27,637 items (BUILD_NOTES, "Issue 11").
DEFAULT_CHUNK = 2048

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
                    chunk: int | None = DEFAULT_CHUNK) -> tuple[jax.Array, jax.Array]:
  """(values float32 [B, k], item indices int32 [B, k]) of the k best items per row of x [B, d].

  Score of item i: <x, emb_i> + bias_i, with (emb, bias) from item_fn. chunk: items per scan step
  (static); None or >= num_items gives `full_top_k`. The last chunk is padded with -inf scores.
  """
  if not 1 <= k <= num_items:
    raise ValueError(f"k must be in [1, {num_items}], got {k}")
  if chunk is None or chunk >= num_items:
    return full_top_k(x, item_fn, num_items, k)
  chunk = max(int(chunk), k)
  num_chunks = -(-num_items // chunk)
  b = x.shape[0]

  def body(carry, start):
    best_v, best_i = carry
    idx = start + jnp.arange(chunk, dtype=jnp.int32)
    valid = idx < num_items
    emb, bias = item_fn(jnp.minimum(idx, num_items - 1))
    s = x @ emb.T
    if bias is not None:
      s = s + bias[None, :]
    s = jnp.where(valid[None, :], s.astype(jnp.float32), -jnp.inf)
    cand_v = jnp.concatenate([best_v, s], axis=1)
    cand_i = jnp.concatenate([best_i, jnp.broadcast_to(idx[None, :], (b, chunk))], axis=1)
    v, pos = jax.lax.top_k(cand_v, k)
    return (v, jnp.take_along_axis(cand_i, pos, axis=1)), None

  init = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.zeros((b, k), jnp.int32))
  starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
  (values, indices), _ = jax.lax.scan(body, init, starts)
  return values, indices
