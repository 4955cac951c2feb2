"""The bridge backend of the CLI: the same shards as `make_bridge_clues`, a summary, --users / --limit."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pipeline_fixtures as pf
from conftest import tiny_config
from lgcd_jax.clues.bridge import make_bridge_clues
from lgcd_jax.data.clue_records import load_clues
from lgcd_jax.data.prepared import load_prepared
from pipelines.pseudo_overlap import Options, PipelineError, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return pf.write_tiny_world(tmp_path_factory, "bridge_cli", seed=2)


@pytest.fixture
def config(data_dir):
  return tiny_config(data_dir=str(data_dir), direction="B2A")


def test_bridge_shards_match_make_bridge_clues(config, data_dir, tmp_path):
  out = tmp_path / "out"
  summary = run(config, Options(backend="bridge", out=str(out), progress=False))
  ds = load_prepared(data_dir)
  expect = make_bridge_clues(ds, "B2A", k=config.clues.bridge_k, clue_len=config.data.clue_len,
                             maxlen=config.data.maxlen, text_dim=config.clues.text_dim)
  got = load_clues(out, "B2A", num_target_items=ds.num_items("A"))
  assert got.source == "bridge:neighbours" and len(got) == len(expect)
  np.testing.assert_array_equal(got.user_ids, expect.user_ids)
  np.testing.assert_array_equal(got.pools, expect.pools)
  np.testing.assert_array_equal(got.items.values, expect.items.values)
  np.testing.assert_array_equal(got.items.offsets, expect.items.offsets)
  np.testing.assert_allclose(got.sims, expect.sims)
  n = len(ds.pool_user_ids["B_only"]) + len(ds.pool_user_ids["overlap"]) + sum(
      len(e) for e in ds.eval["B2A"].values())
  assert summary["users_requested"] == summary["users_succeeded"] == n
  assert summary["users_failed"] == 0 and summary["requests_sent"] == 0
  assert summary["estimated_cost_usd"] == 0.0 and summary["hallucinated_share"] is None
  assert summary["mapped_similarity"]["max"] == pytest.approx(1.0)
  assert summary["users_empty_clue"] == int(np.sum(got.items.lengths() == 0))
  assert set(summary["bridge"]["pools"]) == {"B_only", "overlap", "valid", "test"}
  assert json.loads((out / "summary_B2A.json").read_text()) == summary


def test_bridge_users_limit_and_merge(config, data_dir, tmp_path):
  out = tmp_path / "out"
  run(config, Options(backend="bridge", out=str(out), users="test", progress=False))
  ds = load_prepared(data_dir)
  assert len(load_clues(out, "B2A")) == len(ds.eval["B2A"]["test"])
  summary = run(config, Options(backend="bridge", out=str(out), users="single", limit=7,
                                progress=False))
  assert summary["users_requested"] == 7 and summary["shards"]["rows"] == 7 + len(
      ds.eval["B2A"]["test"])
  clues = load_clues(out, "B2A")
  assert clues.user_ids[clues.pools == "B_only"].tolist() == ds.pool_user_ids["B_only"][:7].tolist()
  with pytest.raises(PipelineError, match="need no clue"):
    run(config, Options(backend="bridge", out=str(out), users="A_only", progress=False))


def test_cli_bridge_and_errors(data_dir, tmp_path):
  out = tmp_path / "out"
  base = [sys.executable, "-m", "pipelines.pseudo_overlap", "--config=configs/tiny.py",
          f"--config.data_dir={data_dir}", f"--out={out}", "--noprogress"]
  proc = subprocess.run(base + ["--backend=bridge", "--users=valid"], cwd=REPO, capture_output=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr.decode()[-2000:]
  assert json.loads(proc.stdout)["users_requested"] == 40 and load_clues(out, "A2B").text_dim == 32
  # An LLM backend without a key: a clear error and exit status 2, before any work.
  env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(base + ["--backend=anthropic", f"--out={tmp_path / 'nokey'}"], cwd=REPO,
                        capture_output=True, timeout=120, env=env)
  assert proc.returncode == 2 and b"ANTHROPIC_API_KEY is not set" in proc.stderr
  assert not (tmp_path / "nokey").exists()
