"""The run summary (`summary.json` and its copy `summary_<direction>.json`): one builder, every backend.

Every summary has the same head (what was run on which users, how many succeeded) and tail (the
shards written, the time taken); between them, each run adds its own counts in its own order.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lgcd_jax.data import atomic
from lgcd_jax.data import loading


def quantiles(x: np.ndarray) -> dict | None:
  """min / p25 / median / p75 / max of `x`, rounded to 4 places; None when empty."""
  if len(x) == 0:
    return None
  q = np.quantile(np.asarray(x, np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
  return {k: round(float(v), 4) for k, v in zip(("min", "p25", "median", "p75", "max"), q)}


def build(config, ds, opts, tasks, *, backend: str, model: str | None, source: str,
          prompt_version: str | None, succeeded: int, failed: int, empty_clue: int,
          failure_reasons: dict, requests_sent: int, counts: dict, rows_written: int,
          start: float) -> dict:
  """The summary of a run that started at `start` (time.perf_counter()): the shared head, then
  `counts` (the run's own fields, in order), then the shards and the throughput."""
  elapsed = time.perf_counter() - start
  return {
      "backend": backend,
      "model": model,
      "source": source,
      "prompt_version": prompt_version,
      "direction": config.direction,
      "data": loading.describe(config, ds),
      "users": opts.users,
      "limit": opts.limit,
      "users_requested": len(tasks),
      "users_succeeded": succeeded,
      "users_failed": failed,
      "users_empty_clue": empty_clue,
      "failure_reasons": failure_reasons,
      "requests_sent": requests_sent,
      **counts,
      "shards": {"dir": str(Path(opts.out) / config.direction), "rows": rows_written},
      "elapsed_seconds": round(elapsed, 3),
      "users_per_second": round(len(tasks) / elapsed, 3) if elapsed > 0 else None,
  }


def write(summary: dict, out: Path, direction: str) -> None:
  atomic.atomic_write_json(out / "summary.json", summary)
  atomic.atomic_write_json(out / f"summary_{direction}.json", summary)
