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


class NonFiniteScoreError(FloatingPointError):
  """A real evaluation user got a NaN or infinite score: its metrics would be meaningless."""


def evaluate(score_fn: Callable[[dict], jax.Array], batches: Iterable[dict],
             put: Callable[[dict], dict] | None = None) -> dict:
  """Returns {"sampled": {metric: mean}, "full": {...}, "n_users": n, "users_per_s": x,
  "by_source_length": {bucket: {"n_users", "sampled", "full"}}}.

  `by_source_length` splits the users by source-history length (metrics.SOURCE_LENGTH_BUCKETS; empty
  buckets are left out), here, so that every method's results carry it alike. Batches without `src`
  get none.

  `put` places a host batch on devices (e.g. sharded over a mesh) before scoring.
  Raises NonFiniteScoreError when any score of a real (weight > 0) row is NaN or infinite: ranks of
  such rows are meaningless (a NaN positive would count as a perfect hit).
  """
  totals = None
  by_len = None
  n = 0.0
  start = time.perf_counter()
  for host_batch in batches:
    batch = put(host_batch) if put else host_batch
    scores = score_fn(batch)
    _check_finite(scores, batch, n)
    sums = metrics.batch_metric_sums(scores, batch["label"], batch["negatives"], batch["weight"])
    sums = jax.device_get(sums)
    if totals is None:
      totals = {p: {k: 0.0 for k in v} for p, v in sums.items()}
    for p, v in sums.items():
      for k, x in v.items():
        totals[p][k] += float(x)
    if "src" in batch:
      by_len = _add_bucket_sums(by_len, jax.device_get(metrics.bucket_metric_sums(
          scores, batch["label"], batch["negatives"], batch["weight"], batch["src"])))
    n += float(np.sum(host_batch["weight"]))
  if totals is None or n == 0:
    raise ValueError("no evaluation users")
  elapsed = time.perf_counter() - start
  out = {p: {k: x / n for k, x in v.items()} for p, v in totals.items()}
  out["n_users"] = int(n)
  out["users_per_s"] = n / max(elapsed, 1e-9)
  if by_len is not None:
    out["by_source_length"] = _bucket_means(by_len)
  return out


def _add_bucket_sums(acc: dict | None, sums: dict) -> dict:
  """Accumulates `metrics.bucket_metric_sums` outputs in float64 on the host."""
  sums = {"count": np.asarray(sums["count"], np.float64),
          **{p: {k: np.asarray(x, np.float64) for k, x in sums[p].items()}
             for p in ("sampled", "full")}}
  if acc is None:
    return sums
  return {"count": acc["count"] + sums["count"],
          **{p: {k: acc[p][k] + x for k, x in sums[p].items()} for p in ("sampled", "full")}}


def _bucket_means(acc: dict) -> dict:
  out = {}
  for i, name in enumerate(metrics.SOURCE_LENGTH_BUCKETS):
    count = float(acc["count"][i])
    if count > 0:
      out[name] = {"n_users": int(round(count)),
                   **{p: {k: float(x[i]) / count for k, x in acc[p].items()}
                      for p in ("sampled", "full")}}
  return out


def _check_finite(scores, batch: dict, users_before: float) -> None:
  weight = batch["weight"]
  user = batch["user"] if "user" in batch else None
  if user is None:  # row positions within the split stand in for the users' rows
    user = users_before + np.arange(np.shape(weight)[0])
  count, first = jax.device_get(metrics.nonfinite_rows(scores, weight, user))
  if int(count):
    raise NonFiniteScoreError(
        f"{int(count)} evaluation user(s) of a batch got non-finite scores (NaN or inf), the first "
        f"at row {int(first)} of the split; refusing to report metrics from them (a NaN positive "
        f"would count as a perfect hit). The model or its inputs are broken: check the training "
        f"loss and the clue and title inputs, or lower train.lr.")
