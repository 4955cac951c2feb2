"""Tests for `profiling`: op-kind names, the trace summary by hand, and a real CPU trace."""

from __future__ import annotations

import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from lgcd_jax import profiling


def test_op_kind_drops_numeric_suffixes():
  assert profiling.op_kind("ynn_fusion.175") == "ynn_fusion"
  assert profiling.op_kind("copy_bitcast_fusion") == "copy_bitcast_fusion"
  assert profiling.op_kind("dot.3.1") == "dot"


def _write(path, events):
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)


def test_summarize_sums_op_kinds_and_skips_host_and_bookkeeping(tmp_path):
  meta = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": t, "args": {"name": n}}
          for t, n in ((1, "python"), (2, "tf_XLAEigen/1"), (3, "tf_XLAPjRtCpuClient/7"))]
  ops = [("ynn_fusion.1", 2, 300), ("ynn_fusion.7", 3, 300), ("copy_bitcast_fusion", 2, 200),
         ("dot", 3, 100), ("ThunkExecutor::Execute (wait for completion)", 3, 5000),
         ("ThreadpoolListener::StartRegion", 2, 4000), ("end: ynn_fusion.7", 3, 3000),
         ("PjitFunction(f)", 1, 9000),
         ("ynn_fusion.2", 1, 7000)]  # the last one is on the host thread: not an op's run
  events = meta + [{"ph": "X", "name": n, "pid": 1, "tid": t, "ts": 0, "dur": d}
                   for n, t, d in ops] + [{"ph": "X", "name": "broken", "pid": 1, "tid": 2}]
  _write(tmp_path / "t.json.gz", events)
  rows = profiling.summarize(tmp_path / "t.json.gz", top=2)
  assert [r["op"] for r in rows] == ["ynn_fusion", "copy_bitcast_fusion", "other"]
  assert rows[0]["ms"] == pytest.approx(0.6) and rows[0]["count"] == 2
  assert [r["share"] for r in rows] == pytest.approx([6 / 9, 2 / 9, 1 / 9])  # of 900 us
  _write(tmp_path / "empty.json.gz", meta)
  assert profiling.summarize(tmp_path / "empty.json.gz") == []


def test_profile_of_a_jitted_function_finds_its_ops(tmp_path):
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
  x = jnp.ones((256, 256))
  f(x).block_until_ready()  # compile outside the trace
  trace = profiling.profile(lambda: f(x), tmp_path)
  assert trace is not None and trace.exists()
  rows = profiling.summarize(trace)
  assert rows and sum(r["share"] for r in rows) == pytest.approx(1.0)
  # The matmul is found whichever XLA thread ran it, and no runtime bookkeeping is counted as an op.
  ops = {r["op"] for r in rows}
  assert ops & {"ynn_fusion", "dot", "fusion", "dot_general"}, ops
  assert all(profiling._OP_NAME.match(op) or op == "other" for op in ops), ops
