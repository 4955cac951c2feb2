"""Train -> checkpoint -> recommend: the served top-k equals the evaluation path's; bad lines are reported."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tiny
from lgcd_jax import builder, checkpoint, inference
from lgcd_jax.data import loading, pipeline
from lgcd_jax.cli import UserError
from lgcd_jax.recommend import Recommender

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(trained_tiny):
  return trained_tiny[0]


def _valid_lines(ds, config):
  users = ds.eval[config.direction]["valid"]
  return [json.dumps({"user": str(u), "source_items": [str(ds.item_ids["A"][i]) for i in seq]})
          for u, seq in zip(users.user_ids, users.source)]


def test_served_topk_equals_the_evaluation_path(trained):
  config = tiny.get_config()
  ds = loading.load_dataset(config, trained)
  setup = builder.build(config, ds)
  state = checkpoint.Checkpointer(trained).restore("best", setup.state)[0]
  rng = jax.random.key(config.seed + inference.SAMPLE_SEED_OFFSET)
  expected = []
  for batch in pipeline.eval_batches(ds, config.direction, "valid", setup.clues,
                                     maxlen=config.data.maxlen, clue_len=config.data.clue_len,
                                     text_dim=config.clues.text_dim,
                                     batch_size=config.data.eval_batch_size):
    scores = inference.score_step(setup.graphdef, state, batch, config.model.sampler,
                              config.model.sample_steps, rng)
    top = np.asarray(jax.lax.top_k(scores, 5)[1])
    expected += [ds.item_ids["B"][row].tolist() for row, w in zip(top, batch["weight"]) if w > 0]

  rec = Recommender(workdir=str(trained), batch_size=config.data.eval_batch_size)
  out = list(rec.serve_lines(_valid_lines(ds, config), topk=5))
  assert len(out) == len(expected)
  assert [o["items"] for o in out] == expected
  assert all(o["clue_source"] == "serving:bridge:neighbours" for o in out)
  assert all(o["scores"] == sorted(o["scores"], reverse=True) for o in out)


def test_serving_in_length_buckets_gives_the_same_top_k(trained):
  # Length buckets cut each served batch to the width it needs: the same output.
  config = tiny.get_config()
  ds = loading.load_dataset(config, trained)
  lines = sorted(_valid_lines(ds, config), key=lambda x: len(json.loads(x)["source_items"]))
  lengths = sorted(len(seq) for seq in ds.eval[config.direction]["valid"].source)
  assert lengths[7] <= 4  # the first batch is cut
  plain = list(Recommender(workdir=str(trained), batch_size=8).serve_lines(lines, topk=5))
  cut = list(Recommender(workdir=str(trained), batch_size=8,
                         length_buckets="2,4").serve_lines(lines, topk=5))
  assert [o["items"] for o in cut] == [o["items"] for o in plain]
  with pytest.raises(UserError, match="--length_buckets"):
    Recommender(workdir=str(trained), length_buckets="2,x")
  np.testing.assert_allclose([o["scores"] for o in cut], [o["scores"] for o in plain], rtol=1e-5,
                             atol=1e-5)


def test_serving_in_length_sorted_micro_batches_gives_the_same_top_k(trained):
  # The CPU default groups 256 users; groups of 3 here, cut to widths 2 / 4 / maxlen, over lines in
  # file order (so sorting moves users across groups): the same output as the whole batch.
  config = tiny.get_config()
  ds = loading.load_dataset(config, trained)
  lines = _valid_lines(ds, config)
  whole = Recommender(workdir=str(trained), batch_size=8)
  whole.grouping = (None, ())
  grouped = Recommender(workdir=str(trained), batch_size=8)
  grouped.grouping = (3, (2, 4))
  plain, cut = (list(r.serve_lines(lines, topk=5)) for r in (whole, grouped))
  assert [o["items"] for o in cut] == [o["items"] for o in plain]
  np.testing.assert_allclose([o["scores"] for o in cut], [o["scores"] for o in plain], rtol=1e-5,
                             atol=1e-5)


def test_bad_lines_get_error_records_and_the_rest_is_served(trained):
  config = tiny.get_config()
  ds = loading.load_dataset(config, trained)
  rec = Recommender(workdir=str(trained), batch_size=4)
  good = _valid_lines(ds, config)[:6]
  a0, b0 = str(ds.item_ids["A"][0]), str(ds.item_ids["B"][0])
  lines = [good[0], "{not json", json.dumps({"user": "x", "source_items": ["NOPE"]}),
           json.dumps({"user": "y", "source_items": []}), json.dumps({"source_items": [a0]}),
           json.dumps([1, 2]), good[1],
           json.dumps({"user": "z", "source_items": [0, 1], "clue": {"items": [b0, 3],
                                                                     "sims": [0.9, 0.5]}}),
           json.dumps({"user": "w", "source_items": [a0], "clue": {"items": [b0], "sims": ["x"]}}),
           *good[2:]]
  out = list(rec.serve_lines(lines, topk=3))
  assert len(out) == len(lines)
  errors = {o["line"]: o for o in out if "error" in o}
  assert set(errors) == {2, 3, 4, 5, 6, 9}
  assert "malformed JSON" in errors[2]["error"]
  assert errors[3]["user"] == "x" and "unknown item 'NOPE'" in errors[3]["error"]
  assert "empty source history" in errors[4]["error"]
  assert "missing" in errors[5]["error"] and "user" not in errors[5]
  assert errors[9]["user"] == "w"
  served = [o for o in out if "error" not in o]
  assert [o["user"] for o in served][:3] == [json.loads(good[0])["user"], json.loads(good[1])["user"], "z"]
  assert served[2]["clue_source"] == "request"
  assert all(len(o["items"]) == 3 for o in served)


def test_cli_writes_one_line_per_input(trained, tmp_path):
  config = tiny.get_config()
  ds = loading.load_dataset(config, trained)
  inp = tmp_path / "users.jsonl"
  inp.write_text("\n".join(_valid_lines(ds, config)[:5] + ["oops"]) + "\n")
  out = tmp_path / "recs.jsonl"
  proc = subprocess.run([sys.executable, "-m", "lgcd_jax.recommend", f"--workdir={trained}",
                         f"--input={inp}", f"--output={out}", "--topk=4", "--batch_size=8"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(records) == 6 and records[-1]["line"] == 6 and "error" in records[-1]
  assert "users/s" in proc.stderr
