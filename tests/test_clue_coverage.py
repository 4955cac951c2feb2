"""Clue coverage (issue 9 item 6): runs count the users with a clue per pool and split, and a clue
directory that misses held-out users stops the run unless clues.min_eval_coverage allows it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config
from lgcd_jax.clues import bridge
from lgcd_jax.clues import source as clue_source
from lgcd_jax.data import synthetic
from lgcd_jax.data.clue_records import ClueSet, save_clues
from lgcd_jax.data.prepared import Ragged, load_prepared, write_prepared


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  out = tmp_path_factory.mktemp("coverage") / "tiny"
  write_prepared(synthetic.generate(seed=5, scale=0.2), out, source="synthetic", arguments={},
                 seed=5)
  ds = load_prepared(out)
  c = tiny_config(data_dir=str(out), **{"synthetic.enabled": False})
  clues = bridge.make_bridge_clues(ds, "A2B", k=c.clues.bridge_k, clue_len=c.data.clue_len,
                                   maxlen=c.data.maxlen, text_dim=c.clues.text_dim)
  return ds, clues, out


def _without(clues: ClueSet, pool: str, count: int) -> ClueSet:
  """The clue set with the first `count` users of `pool` removed."""
  drop = np.flatnonzero(clues.pools == pool)[:count]
  keep = np.setdiff1d(np.arange(len(clues)), drop)
  items = clues.items.to_lists()
  offsets = clues.items.offsets
  sims = [clues.sims[offsets[r]:offsets[r + 1]] for r in keep]
  return ClueSet(clues.direction, clues.user_ids[keep], clues.pools[keep],
                 Ragged.from_lists([items[r] for r in keep]),
                 np.concatenate(sims).astype(np.float32), clues.summary_emb[keep],
                 clues.has_summary[keep], clues.summaries[keep], clues.source)


def test_coverage_counts_users_with_a_clue_per_pool_and_split(world):
  ds, clues, _ = world
  cov = clue_source.coverage(_without(clues, "valid", 3), ds, "A2B")
  assert set(cov) == {"A_only", "overlap", "valid", "test"}
  n_valid = len(ds.eval["A2B"]["valid"])
  assert cov["valid"]["users"] == n_valid and cov["valid"]["with_clue"] == n_valid - 3
  for pool in ("A_only", "overlap", "test"):
    assert cov[pool]["with_clue"] == cov[pool]["users"] > 0
  assert cov["A_only"]["users"] == len(ds.pool_user_ids["A_only"])
  assert clue_source.coverage(None, ds, "A2B") is None


def test_a_clue_dir_missing_eval_users_stops_the_run(world, tmp_path):
  ds, clues, out = world
  save_clues(_without(clues, "test", 2), tmp_path / "clues")
  c = tiny_config(data_dir=str(out), **{"synthetic.enabled": False,
                                        "clues.clue_dir": str(tmp_path / "clues")})
  n_test = len(ds.eval["A2B"]["test"])
  with pytest.raises(clue_source.ClueCoverageError,
                     match=f"{n_test - 2} of {n_test} test users.*min_eval_coverage=1"):
    clue_source.load_or_make(c, ds)
  lenient = tiny_config(data_dir=str(out), **{"synthetic.enabled": False,
                                              "clues.clue_dir": str(tmp_path / "clues"),
                                              "clues.min_eval_coverage": 0.5})
  loaded = clue_source.load_or_make(lenient, ds)
  assert len(loaded) == len(clues) - 2
  with pytest.raises(ValueError, match="share in"):
    clue_source.load_or_make(tiny_config(data_dir=str(out), **{
        "synthetic.enabled": False, "clues.clue_dir": str(tmp_path / "clues"),
        "clues.min_eval_coverage": 2.0}), ds)
  # Complete clues load at the default.
  save_clues(clues, tmp_path / "full")
  full = tiny_config(data_dir=str(out), **{"synthetic.enabled": False,
                                           "clues.clue_dir": str(tmp_path / "full")})
  assert len(clue_source.load_or_make(full, ds)) == len(clues)


def test_runs_log_the_clue_coverage(trained_tiny):
  workdir, results = trained_tiny
  cov = results["clue_coverage"]
  assert set(cov) == {"A_only", "overlap", "valid", "test"}
  assert all(v["with_clue"] == v["users"] for v in cov.values())  # the in-process bridge covers all
  assert cov["valid"]["users"] == results["n_users"]["valid"]
  written = json.loads((workdir / "results.json").read_text())
  assert written["clue_coverage"] == cov
  start = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()
           if json.loads(l)["kind"] == "start"]
  assert start and start[0]["clue_coverage"] == cov
