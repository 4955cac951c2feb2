"""Serving builds and labels clues as training does (issue 9 item 3), and the LLM-only baseline's bridge
follows the config's bridge_mode / text_weight."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TRAINED_TINY_OVERRIDES, tiny_config
from lgcd_jax import experiment
from lgcd_jax.clues import bridge
from lgcd_jax.data import loading, pipeline
from lgcd_jax.recommend import Recommender
from lgcd_jax.text import encoders as text_encoders


@pytest.fixture(scope="module")
def served(trained_tiny):
  workdir = trained_tiny[0]
  config = tiny_config(**TRAINED_TINY_OVERRIDES)
  ds = loading.load_dataset(config, workdir)
  titles = text_encoders.title_embeddings(config, ds, ("A", "B"))
  return workdir, config, ds, titles


def _lines(ds, n, clue=None):
  users = ds.eval["A2B"]["valid"]
  out = []
  for u, seq in list(zip(users.user_ids, users.source))[:n]:
    rec = {"user": str(u), "source_items": [int(i) for i in seq]}
    if clue is not None:
      rec["clue"] = clue
    out.append(json.dumps(rec))
  return out


def _training_clue_arrays(config, ds, clues, n):
  batch = pipeline.eval_batches(ds, "A2B", "valid", clues, maxlen=config.data.maxlen,
                                clue_len=config.data.clue_len, text_dim=config.clues.text_dim,
                                batch_size=n)[0]
  return batch["clue"], batch["clue_sim"]


def _served_clue_arrays(rec, ds, n):
  requests = [rec.parse(json.loads(line)) for line in _lines(ds, n)]
  batch, sources = rec._batch(requests)
  return batch["clue"][:n], batch["clue_sim"][:n], sources


@pytest.mark.parametrize("mode,text_weight", [("neighbours", 0.0), ("neighbours", 0.5),
                                              ("text", 0.0)])
def test_a_served_bridge_clue_is_the_training_runs_bridge_clue(served, mode, text_weight):
  workdir, config, ds, titles = served
  rec = Recommender(workdir=str(workdir), batch_size=16)
  # The checkpoint's config is what a training run with these settings would have stored.
  rec.config.clues.bridge_mode, rec.config.clues.text_weight = mode, text_weight
  n = min(16, len(ds.eval["A2B"]["valid"]))
  clues = bridge.make_bridge_clues(ds, "A2B", mode=mode, k=config.clues.bridge_k,
                                   clue_len=config.data.clue_len, text_weight=text_weight,
                                   src_title_emb=titles["A"], tgt_title_emb=titles["B"],
                                   maxlen=config.data.maxlen, text_dim=config.clues.text_dim,
                                   pools=("valid",))
  want_clue, want_sim = _training_clue_arrays(config, ds, clues, n)
  clue, clue_sim, sources = _served_clue_arrays(rec, ds, n)
  assert (want_clue > 0).any()
  np.testing.assert_array_equal(clue, want_clue)
  np.testing.assert_allclose(clue_sim, want_sim, rtol=1e-5, atol=1e-6)
  # Labelled by what made it: the bridge, at serving, not the checkpoint's training clue source.
  assert sources == [f"serving:bridge:{mode}"] * n
  assert rec.trained_clue_source == "bridge:neighbours"


def test_served_clue_labels_request_bridge_and_none(served):
  workdir, _, ds, _ = served
  rec = Recommender(workdir=str(workdir), batch_size=8)
  rec.meta["clue_source"] = "anthropic:some-model"  # trained on LLM clues: still labelled honestly
  b0 = str(ds.item_ids["B"][0])
  lines = _lines(ds, 2) + _lines(ds, 1, clue={"items": [b0], "sims": [0.9]})
  out = list(rec.serve_lines(lines, topk=3))
  assert [o["clue_source"] for o in out] == ["serving:bridge:neighbours"] * 2 + ["request"]

  # A model without clue input (DMCDR, EMCDR) is served no clue, and says so.
  rec = Recommender(workdir=str(workdir), batch_size=8)
  rec.config.model.use_clues = False
  batch, sources = rec._batch([rec.parse(json.loads(line)) for line in _lines(ds, 3)])
  assert sources == ["none"] * 3 and not batch["clue"].any()


def test_serving_refuses_a_bridge_it_cannot_rebuild(served):
  workdir, _, ds, _ = served
  rec = Recommender(workdir=str(workdir), batch_size=8)
  rec.meta["bridge"] = None  # no overlap users stored: the neighbour bridge cannot be rebuilt
  b0 = str(ds.item_ids["B"][0])
  lines = _lines(ds, 2) + _lines(ds, 1, clue={"items": [b0], "sims": [0.9]})
  out = list(rec.serve_lines(lines, topk=3))
  assert all("stores none" in o["error"] and "give the line a clue" in o["error"] for o in out[:2])
  assert out[2]["clue_source"] == "request" and len(out[2]["items"]) == 3
  rec = Recommender(workdir=str(workdir), batch_size=8)
  rec.config.clues.bridge_mode = "nope"
  (err,) = list(rec.serve_lines(_lines(ds, 1), topk=3))
  assert "cannot be rebuilt" in err["error"] and "'nope'" in err["error"]


@pytest.mark.parametrize("mode,text_weight", [("neighbours", 0.5), ("text", 0.0)])
def test_llm_only_bridge_follows_bridge_mode_and_text_weight(served, mode, text_weight):
  _, config, ds, titles = served
  c = tiny_config(**TRAINED_TINY_OVERRIDES, method="llm_only",
                  **{"clues.bridge_mode": mode, "clues.text_weight": text_weight})
  model, clues = experiment.make_baseline(c, ds)  # text_weight != 0 used to fail: no titles
  assert clues is None and model.source == f"bridge:{mode}"
  src = pipeline.pad_ragged_left(ds.eval["A2B"]["valid"].source, c.data.maxlen)[:8]
  want = bridge.make_bridge(ds, "A2B", mode=mode, k=c.clues.bridge_k, text_weight=text_weight,
                            src_title_emb=titles["A"], tgt_title_emb=titles["B"]).scores(
                                src, -np.ones(len(src), np.int64))
  np.testing.assert_allclose(np.asarray(model.score({"src": src})), np.asarray(want), rtol=1e-6)
