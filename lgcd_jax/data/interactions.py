"""Sparse binary user-item matrices built from ragged histories (JAX BCOO, never densified).

The co-occurrence baseline and the offline neighbour bridge both score a user through the training
overlap users' source and target matrices; `overlap_matrices` builds them once, the same way for both.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from lgcd_jax.data.prepared import PreparedDataset, direction_domains
from lgcd_jax.data.ragged import Ragged


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


@dataclasses.dataclass(frozen=True)
class OverlapMatrices:
  """The training overlap users' binary matrices of one direction, stored transposed ([items, users])
  so that scoring a user batch is sparse @ dense twice: shared = S x^T, then votes = T^T shared."""

  s_t: sparse.BCOO  # [num source items, num overlap users] = S^T
  t_t: sparse.BCOO  # [num target items, num overlap users] = T^T
  src_distinct: np.ndarray  # [num overlap users] float32: distinct source items of each user

  @property
  def num_users(self) -> int:
    return self.s_t.shape[1]


def overlap_matrices(ds: PreparedDataset, direction: str) -> OverlapMatrices:
  """S^T and T^T of the training overlap pool in `direction` (see OverlapMatrices)."""
  src, tgt = direction_domains(direction)
  overlap = ds.pools["overlap"]
  n = len(overlap[src])
  num_src, num_tgt = ds.num_items(src), ds.num_items(tgt)
  s_rows, s_cols = binary_matrix(overlap[src], num_src)
  t_rows, t_cols = binary_matrix(overlap[tgt], num_tgt)
  return OverlapMatrices(s_t=bcoo(s_cols, s_rows, (num_src, n)),
                         t_t=bcoo(t_cols, t_rows, (num_tgt, n)),
                         src_distinct=np.bincount(s_rows, minlength=n).astype(np.float32))
