"""Small helpers the count- and factorisation-based baselines share."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from lgcd_jax.data.prepared import Ragged


def multi_hot(items_plus_one: jax.Array, num_items: int) -> jax.Array:
  """[B, L] item indices + 1 (0 = pad) -> [B, num_items] binary float32 rows."""
  b = items_plus_one.shape[0]
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], items_plus_one.shape)
  x = jnp.zeros((b, num_items + 1), jnp.float32).at[rows, items_plus_one].set(1.0)
  return x[:, 1:]


def binary_matrix(seqs: Ragged, num_items: int, col_offset: int = 0, num_rows: int | None = None,
                  row_offset: int = 0, total_cols: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Unique (row, col) pairs of a user-item binary matrix, as int32 arrays."""
  lengths = seqs.lengths()
  rows = np.repeat(np.arange(len(seqs), dtype=np.int64), lengths) + row_offset
  cols = seqs.values.astype(np.int64) + col_offset
  width = (total_cols or num_items + col_offset)
  key = np.unique(rows * width + cols)
  return (key // width).astype(np.int32), (key % width).astype(np.int32)


def bcoo(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int],
         values: np.ndarray | None = None) -> sparse.BCOO:
  data = np.ones(len(rows), np.float32) if values is None else values.astype(np.float32)
  indices = np.stack([rows, cols], axis=1).astype(np.int32)
  return sparse.BCOO((jnp.asarray(data), jnp.asarray(indices)), shape=shape)


def item_counts(seqs_list: list[Ragged], num_items: int) -> np.ndarray:
  counts = np.zeros(num_items, np.float64)
  for seqs in seqs_list:
    np.add.at(counts, seqs.values, 1.0)
  return counts
