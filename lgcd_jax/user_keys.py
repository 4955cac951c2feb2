"""Per-user sampling noise: a user's scores never depend on its row, its batch or its neighbours.

Evaluation and serving draw the reverse chain's noise from one key per user,
`fold_in(seed key, noise_id)`, where `noise_id` is a stable 32-bit hash of the user's id: the
prepared user id in evaluation, the request's "user" value in serving (a string, or any JSON value), so
a served user with the id of an evaluation user gets the evaluation's noise. Batches
carry it as the uint32 column "noise_id"; `row_keys` turns it into [B] keys inside the jitted
function, and the samplers (`lgcd_jax.model.diffusion`) draw row b's noise from key b alone. So the
same user gets the same top-k on any input line, with any batch size, and padding rows change nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np


def noise_id(user) -> int:
  """A stable uint32 for a user id, the same in every process and Python version (the id 7 and the
  string "7" are one user)."""
  text = user if isinstance(user, str) else json.dumps(user, sort_keys=True, default=str)
  return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


def noise_ids(users: Iterable) -> np.ndarray:
  return np.fromiter((noise_id(u) for u in users), dtype=np.uint32)


def row_keys(key, ids):
  """[B] keys fold_in(key, ids[b]) (use inside jit; ids is a batch's "noise_id" column)."""
  import jax
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, ids)


def batch_keys(key, batch: dict):
  """The row keys of a batch with a "noise_id" column, else `key` itself (one key for the batch)."""
  if "noise_id" in batch:
    return row_keys(key, batch["noise_id"])
  return key
