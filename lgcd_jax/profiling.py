"""Where a compiled function's time goes: a `jax.profiler` trace, summed by kind of XLA op.

`profile(fn, directory)` runs `fn` under `jax.profiler.trace` (with the Perfetto JSON that
TensorBoard's profile plugin is not needed to read) and `summarize(path)` sums the op events of that
trace by kind: an op's name without its numeric suffix ("ynn_fusion.175" -> "ynn_fusion", the
fused matmuls of the CPU backend; "copy_bitcast_fusion" layout changes; "broadcast_add_fusion"
mostly the threefry hashing of random bits). The bench's `--profile_dir` uses it for the train
steps (BUILD_NOTES, issue 11, has what it found).

Durations are summed over the XLA threads, so on a multi-threaded backend the total exceeds the
wall time; the shares are what to read. Which thread runs an op is XLA's business (on jax 0.10's CPU
client the PjRt client's own threads run most of them, the Eigen pool the rest), so an event counts
by its name: XLA names ops like HLO instructions ("ynn_fusion.1", "wrapped_sine", "dot"), lower
case, while the runtime's bookkeeping ("ThunkExecutor::Execute", "ThreadpoolListener::Record",
"end: ynn_fusion" markers) and the Python thread's frames and dispatch are left out. A trace with no
op events gives an empty summary rather than an error.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path
from typing import Callable

import jax

# An XLA op's name: an HLO instruction name, lower case, with optional numeric suffixes. The
# runtime's scheduling events (CamelCase, "::", "end: " markers) enclose or wait on ops: not ops.
_OP_NAME = re.compile(r"^[a-z][a-z0-9_\-]*(\.\d+)*$")
# The Python thread dispatches (its events are Python frames and PjRt calls); the ops run elsewhere.
_HOST_THREADS = re.compile(r"^python", re.IGNORECASE)


def profile(fn: Callable[[], object], directory: str | Path) -> Path | None:
  """Runs fn() (blocking on its result) under a trace into directory; returns the Perfetto JSON's
  path, or None if the profiler wrote none."""
  directory = Path(directory)
  with jax.profiler.trace(str(directory), create_perfetto_trace=True):
    jax.block_until_ready(fn())
  found = sorted(directory.glob("**/perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
  return found[-1] if found else None


def op_kind(name: str) -> str:
  """"ynn_fusion.175" -> "ynn_fusion": an XLA op's name without its numeric suffix."""
  return re.sub(r"(\.\d+)+$", "", name)


def summarize(path: str | Path, top: int = 12) -> list[dict]:
  """The `top` op kinds of a Perfetto trace by summed duration: [{"op", "ms", "share", "count"}],
  share being of all op time in the trace (the rest are folded into one "other" row)."""
  with gzip.open(path, "rt") as f:
    trace = json.load(f)
  events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
  threads = {(e.get("pid"), e.get("tid")): str(e.get("args", {}).get("name", ""))
             for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
  time_us, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") != "X" or not isinstance(e.get("dur"), (int, float)):
      continue
    name = str(e.get("name", ""))
    if not _OP_NAME.match(name) or _HOST_THREADS.match(threads.get((e.get("pid"), e.get("tid")), "")):
      continue
    time_us[op_kind(name)] += e["dur"]
    count[op_kind(name)] += 1
  total = sum(time_us.values())
  if not total:
    return []
  rows = [{"op": op, "ms": us / 1e3, "share": us / total, "count": count[op]}
          for op, us in time_us.most_common(top)]
  rest = total - sum(time_us[r["op"]] for r in rows)
  if rest > 0:
    rows.append({"op": "other", "ms": rest / 1e3, "share": rest / total,
                 "count": sum(count.values()) - sum(r["count"] for r in rows)})
  return rows
