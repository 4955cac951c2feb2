"""Small helpers the count- and factorisation-based baselines share (the sparse user-item matrices they
are built from live in `lgcd_jax.data.interactions`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgcd_jax.data.ragged import Ragged


def multi_hot(items_plus_one: jax.Array, num_items: int) -> jax.Array:
  """[B, L] item indices + 1 (0 = pad) -> [B, num_items] binary float32 rows."""
  b = items_plus_one.shape[0]
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], items_plus_one.shape)
  x = jnp.zeros((b, num_items + 1), jnp.float32).at[rows, items_plus_one].set(1.0)
  return x[:, 1:]


def item_counts(seqs_list: list[Ragged], num_items: int) -> np.ndarray:
  counts = np.zeros(num_items, np.float64)
  for seqs in seqs_list:
    np.add.at(counts, seqs.values, 1.0)
  return counts
