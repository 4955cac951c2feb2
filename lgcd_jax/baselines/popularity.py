"""Popularity: every user gets the target items ranked by their training interaction counts."""

from __future__ import annotations

import jax.numpy as jnp

from lgcd_jax.baselines import common
from lgcd_jax.data.prepared import PreparedDataset, direction_domains


class Popularity:
  name = "popularity"

  def __init__(self, ds: PreparedDataset, direction: str, config=None):
    _, tgt = direction_domains(direction)
    self.counts = jnp.asarray(common.item_counts(ds.domain_sequences(tgt), ds.num_items(tgt)),
                              jnp.float32)

  def score(self, batch):
    return jnp.broadcast_to(self.counts, (batch["src"].shape[0], self.counts.shape[0]))
