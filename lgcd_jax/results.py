"""Where results land: `WORKDIR/results.json` (one per run) and `WORKDIR/metrics.jsonl` (a log)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lgcd_jax.data import atomic


def _plain(x):
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "item"):
    try:
      return np.asarray(x).item() if np.asarray(x).ndim == 0 else np.asarray(x).tolist()
    except (TypeError, ValueError):
      return str(x)
  return x


def make_results(method: str, direction: str, data: str, valid: dict, test: dict,
                 **extra) -> dict:
  """The results schema shared by LGCD and every baseline."""
  strip = lambda r: {k: r[k] for k in ("sampled", "full")}
  return _plain({
      "method": method,
      "direction": direction,
      "data": data,
      "valid": strip(valid),
      "test": strip(test),
      "n_users": {"valid": valid["n_users"], "test": test["n_users"]},
      # Per source-history length bucket (evaluator.evaluate): {split: {bucket: {"n_users", ...}}}.
      **({"by_source_length": {"valid": valid["by_source_length"],
                               "test": test["by_source_length"]}}
         if "by_source_length" in valid and "by_source_length" in test else {}),
      **extra,
  })


def write_results(workdir: str | Path, results: dict) -> Path:
  path = Path(workdir) / "results.json"
  atomic.atomic_write_json(path, results)
  return path


class MetricsLog:
  """Appends one JSON object per line; each line is flushed so a crash loses at most the last one."""

  def __init__(self, workdir: str | Path, enabled: bool = True):
    self.path = Path(workdir) / "metrics.jsonl"
    self.enabled = enabled

  def write(self, kind: str, **fields) -> None:
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(_plain({"kind": kind, "time": time.time(), **fields})) + "\n")
