"""Joint matrix factorisation (CMF-style): truncated SVD of the normalised user-item matrix.

Rows are all training users (A-only, B-only, overlap), columns all items of both domains. Overlap users tie
the two domains' item factors together. The matrix is normalised symmetrically,
R_ui = 1 / sqrt(deg(u) deg(i)), and factorised as R ~ U S V^T by a randomized SVD (Halko et al.) whose
products are sparse (BCOO). A cold user is folded in from its source items: its normalised row r gives
u = r V S^-1, and target scores are u S V_tgt^T = (r V_src) V_tgt^T, rescaled by deg(i)^item_power to undo
part of the column normalisation (popular items get back some of their prior).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgcd_jax.baselines import common
from lgcd_jax.data.prepared import PreparedDataset, direction_domains


def randomized_svd(matrix, num_cols: int, rank: int, iters: int, key: jax.Array,
                   oversample: int = 16) -> tuple[jax.Array, jax.Array]:
  """Top-`rank` singular values and right singular vectors [num_cols, rank] of a sparse matrix."""
  width = rank + oversample
  q = jnp.linalg.qr(matrix @ jax.random.normal(key, (num_cols, width)))[0]
  for _ in range(iters):  # subspace iterations sharpen the spectrum's decay
    z = jnp.linalg.qr(matrix.T @ q)[0]
    q = jnp.linalg.qr(matrix @ z)[0]
  small = (matrix.T @ q).T  # [width, num_cols] = Q^T M
  _, s, vt = jnp.linalg.svd(small, full_matrices=False)
  return s[:rank], vt[:rank].T


class JointMF:
  name = "mf"

  def __init__(self, ds: PreparedDataset, direction: str, config=None, rank: int | None = None,
               iters: int | None = None, item_power: float | None = None, seed: int = 0):
    src, tgt = direction_domains(direction)
    base = config.baselines if config is not None else None
    rank = rank or (base.mf_rank if base is not None else 64)
    iters = iters if iters is not None else (base.mf_iters if base is not None else 4)
    self.item_power = item_power if item_power is not None else (
        base.mf_item_power if base is not None else 0.0)
    n_a, n_b = ds.num_items("A"), ds.num_items("B")
    offsets = {"A": 0, "B": n_a}
    rows, cols, num_users = [], [], 0
    for pool, domains in (("A_only", ("A",)), ("B_only", ("B",)), ("overlap", ("A", "B"))):
      n_pool = len(ds.pool_user_ids[pool])
      for d in domains:
        r, c = common.binary_matrix(ds.pools[pool][d], ds.num_items(d), col_offset=offsets[d],
                                    row_offset=num_users, total_cols=n_a + n_b)
        rows.append(r)
        cols.append(c)
      num_users += n_pool
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    user_deg = np.bincount(rows, minlength=num_users).astype(np.float64)
    item_deg = np.bincount(cols, minlength=n_a + n_b).astype(np.float64)
    values = 1.0 / np.sqrt(user_deg[rows] * item_deg[cols])
    matrix = common.bcoo(rows, cols, (num_users, n_a + n_b), values)
    s, v = randomized_svd(matrix, n_a + n_b, rank, iters, jax.random.key(seed))
    del s  # the fold-in r V V^T does not need the singular values
    inv_sqrt_deg = np.where(item_deg > 0, 1.0 / np.sqrt(np.maximum(item_deg, 1.0)), 0.0)
    sl = {d: slice(offsets[d], offsets[d] + ds.num_items(d)) for d in ("A", "B")}
    self.num_src = ds.num_items(src)
    self.v_src = jnp.asarray(v[sl[src]] * inv_sqrt_deg[sl[src], None], jnp.float32)
    self.v_tgt = jnp.asarray(v[sl[tgt]], jnp.float32)
    self.tgt_scale = jnp.asarray(item_deg[sl[tgt]] ** self.item_power, jnp.float32)
    self._score = jax.jit(self._score_impl)

  def _score_impl(self, v_src, v_tgt, tgt_scale, src):
    x = common.multi_hot(src, self.num_src)
    return ((x @ v_src) @ v_tgt.T) * tgt_scale[None, :]

  def score(self, batch):
    return self._score(self.v_src, self.v_tgt, self.tgt_scale, jnp.asarray(batch["src"]))
