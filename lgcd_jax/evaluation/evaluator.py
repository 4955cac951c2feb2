"""The evaluation loop: scores every eval user against all target items, both protocols.

Methods supply `score_fn(batch) -> [B, num_target_items]`; batches follow the eval-batch contract of
`lgcd_jax/data/pipeline.py` (the last batch padded with weight-0 rows, never dropped).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import jax
import numpy as np

from lgcd_jax.evaluation import metrics


def evaluate(score_fn: Callable[[dict], jax.Array], batches: Iterable[dict],
             put: Callable[[dict], dict] | None = None) -> dict:
  """Returns {"sampled": {metric: mean}, "full": {...}, "n_users": n, "users_per_s": x}.

  `put` places a host batch on devices (e.g. sharded over a mesh) before scoring.
  """
  totals = None
  n = 0.0
  start = time.perf_counter()
  for host_batch in batches:
    batch = put(host_batch) if put else host_batch
    scores = score_fn(batch)
    sums = metrics.batch_metric_sums(scores, batch["label"], batch["negatives"], batch["weight"])
    sums = jax.device_get(sums)
    if totals is None:
      totals = {p: {k: 0.0 for k in v} for p, v in sums.items()}
    for p, v in sums.items():
      for k, x in v.items():
        totals[p][k] += float(x)
    n += float(np.sum(host_batch["weight"]))
  if totals is None or n == 0:
    raise ValueError("no evaluation users")
  elapsed = time.perf_counter() - start
  out = {p: {k: x / n for k, x in v.items()} for p, v in totals.items()}
  out["n_users"] = int(n)
  out["users_per_s"] = n / max(elapsed, 1e-9)
  return out
