"""Throughput of the anthropic backend against the local fake server, at several concurrencies.

  python -m pipelines.bench_fake_server [--users=150 --latency=0.2 --concurrency=1,32]

Runs wherever the package is installed (the server is `pipelines/fake_anthropic.py`). Each concurrency
runs the whole pipeline (prompts, requests through the official SDK, parsing, mapping, shards) on the
synthetic tiny config into a fresh output directory, so nothing comes from the cache. It prints, per
concurrency, end-to-end users/s (the summary's `users_per_second`) and the request phase alone (first
request sent to last answer, from the server's log). Only 127.0.0.1 is contacted; the API key is a fake one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from absl import app, flags

from configs import tiny
from lgcd_jax.data import loading
from pipelines import fake_anthropic
from pipelines.pseudo_overlap import Options, run

_USERS = flags.DEFINE_integer("users", 150, "Users per run.")
_LATENCY = flags.DEFINE_float("latency", 0.2, "Server latency per request, in seconds.")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "32"], "Concurrencies to measure.")


def main(argv) -> None:
  del argv

  results = []
  with tempfile.TemporaryDirectory() as tmp:
    config = tiny.get_config()
    ds = loading.load_dataset(config, Path(tmp) / "data")
    config.data_dir = str(ds.path)
    with fake_anthropic.FakeAnthropic(api_key="sk-ant-bench-fake", target_titles=ds.titles["B"],
                                      latency=_LATENCY.value) as server:
      os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-fake"
      os.environ["ANTHROPIC_BASE_URL"] = server.url
      for c in (int(x) for x in _CONCURRENCY.value):
        start_log = len(server.log)
        t0 = time.perf_counter()
        summary = run(config, Options(backend="anthropic", out=str(Path(tmp) / f"c{c}"),
                                      limit=_USERS.value, concurrency=c, progress=False))
        wall = time.perf_counter() - t0
        entries = server.log[start_log:]
        phase = (max(e["t"] for e in entries) + _LATENCY.value) - min(e["t"] for e in entries)
        row = {"concurrency": c, "users": summary["users_requested"],
               "succeeded": summary["users_succeeded"], "requests_sent": summary["requests_sent"],
               "max_in_flight": server.max_in_flight, "wall_seconds": round(wall, 2),
               "users_per_second": summary["users_per_second"],
               "request_phase_seconds": round(phase, 2),
               "request_phase_users_per_second": round(summary["users_requested"] / phase, 2)}
        server.max_in_flight = 0
        results.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
