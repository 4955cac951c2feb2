"""Item co-occurrence from overlap users.

score(b | user) = sum over the user's distinct source items a of C[a, b], where C[a, b] counts the training
overlap users who have both a (source) and b (target). Computed without forming C: first the number of
source items the user shares with each overlap user, then the votes of those users' target items:
score = (x S^T) T with S, T the overlap users' binary source / target matrices (sparse).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lgcd_jax.baselines import common
from lgcd_jax.data import interactions
from lgcd_jax.data.prepared import PreparedDataset, direction_domains


class Cooccurrence:
  name = "cooccurrence"

  def __init__(self, ds: PreparedDataset, direction: str, config=None):
    src, tgt = direction_domains(direction)
    self.num_src, self.num_tgt = ds.num_items(src), ds.num_items(tgt)
    overlap = ds.pools["overlap"]
    matrices = interactions.overlap_matrices(ds, direction)  # transposed: both products sparse @ dense
    self.s_t, self.t_t = matrices.s_t, matrices.t_t  # S^T, T^T
    normalize = bool(config.baselines.cooc_normalize) if config is not None else False
    counts = common.item_counts([overlap[tgt]], self.num_tgt)
    self.col_scale = jnp.asarray(1.0 / jnp.sqrt(jnp.maximum(counts, 1.0)) if normalize
                                 else jnp.ones(self.num_tgt), jnp.float32)
    self._score = jax.jit(self._score_impl)

  def _score_impl(self, s_t, t_t, col_scale, src):
    x = common.multi_hot(src, self.num_src)  # [B, nS]
    shared = (s_t.T @ x.T)  # [n_overlap, B]: source items shared with each overlap user
    votes = (t_t @ shared).T  # [B, nT]
    return votes * col_scale[None, :]

  def score(self, batch):
    return self._score(self.s_t, self.t_t, self.col_scale, jnp.asarray(batch["src"]))
