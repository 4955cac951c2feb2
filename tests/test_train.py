"""End-to-end training through `main.py`'s code path: results, resume after SIGKILL, NaN guard."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import TRAINED_TINY_OVERRIDES, tiny_config
from lgcd_jax import builder, experiment, train
from lgcd_jax.data import loading

REPO = Path(__file__).resolve().parents[1]


def test_tiny_lgcd_run_writes_results_and_checkpoints(trained_tiny):
  workdir, res = trained_tiny
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["method"] == "lgcd" and saved["direction"] == "A2B"
  for split in ("valid", "test"):
    for proto in ("sampled", "full"):
      assert set(saved[split][proto]) == {"HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR"}
  assert saved["n_users"]["test"] == res["n_users"]["test"] > 0
  assert saved["clue_source"].startswith("bridge")
  kinds = [json.loads(line)["kind"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert kinds[0] == "start" and "train" in kinds and kinds.count("eval") >= 2
  assert any((workdir / "checkpoints" / "best").iterdir())
  assert any((workdir / "checkpoints" / "latest").iterdir())


def test_rerun_on_a_finished_workdir_gives_the_same_answer(trained_tiny, tmp_path):
  workdir, res = trained_tiny
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  again = experiment.run(tiny_config(**TRAINED_TINY_OVERRIDES), copy)
  assert again["test"] == res["test"] and again["steps_run"] == res["steps_run"]


def _main(workdir, *extra):
  return [sys.executable, str(REPO / "main.py"), "--config=configs/tiny.py", f"--workdir={workdir}",
          "--config.train.steps=60", "--config.train.checkpoint_every=10",
          "--config.train.patience=100", *extra]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  ref = tmp_path / "ref"
  subprocess.run(_main(ref), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_main(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  latest = killed / "checkpoints" / "latest"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [p for p in latest.glob("*") if p.name.isdigit()] if latest.exists() else []
    if steps and max(int(p.name) for p in steps) >= 40:  # mid diffusion stage
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "results.json").exists()
  subprocess.run(_main(killed), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
  a = json.loads((ref / "results.json").read_text())
  b = json.loads((killed / "results.json").read_text())
  assert b["steps_run"] == a["steps_run"] == 80
  assert b["best_step"] == a["best_step"]
  assert b["test"] == a["test"] and b["valid"] == a["valid"]


def test_nan_loss_stops_with_last_good_checkpoint_intact(trained_tiny, tmp_path, monkeypatch):
  workdir = tmp_path / "copy"
  shutil.copytree(trained_tiny[0], workdir)
  last = train.ckpt_lib.Checkpointer(workdir).latest_step()
  assert last == 40
  # Resume with more steps and a poisoned learning rate (not through the config: a resume must keep
  # the run's train.lr): the parameters become NaN.
  monkeypatch.setattr(builder, "learning_rate", lambda config, steps=None: lambda i: float("nan"))
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
    experiment.run(tiny_config(**{"train.steps": 40}), workdir)
  ckpt = train.ckpt_lib.Checkpointer(workdir)
  assert ckpt.latest_step() == last
  assert ckpt.restore("latest", _like_state(workdir)) is not None  # still readable


def _like_state(workdir):
  config = tiny_config(**TRAINED_TINY_OVERRIDES)
  return builder.build(config, loading.load_dataset(config, workdir)).state


def test_item_bias_can_start_from_log_popularity_over_all_target_training_users(trained_tiny):
  workdir, _ = trained_tiny
  config = tiny_config(**{"model.item_bias": True, "model.item_bias_init": "log_popularity"})
  ds = loading.load_dataset(config, workdir)
  tgt = config.direction[-1]
  counts = np.zeros(ds.num_items(tgt))
  for pool in ("A_only", "B_only", "overlap"):  # by hand: every training sequence of the target
    for seq in (ds.pools[pool][tgt].to_lists() if tgt in ds.pools[pool] else []):
      for item in seq:
        counts[item] += 1
  expected = np.log1p(counts) - np.log1p(counts).mean()
  np.testing.assert_allclose(builder.bias_init(config, ds), expected, rtol=1e-5, atol=1e-6)

  setup = builder.build(config, ds)
  model, _ = nnx.merge(setup.graphdef, setup.state)
  np.testing.assert_allclose(model.tgt_bias[...], expected, rtol=1e-5, atol=1e-6)
  assert builder.bias_init(tiny_config(**{"model.item_bias": False,
                                       "model.item_bias_init": "log_popularity"}), ds) is None
  with pytest.raises(ValueError, match="item_bias_init"):
    builder.bias_init(tiny_config(**{"model.item_bias": True, "model.item_bias_init": "popular"}), ds)


def test_joint_fine_tuning_keeps_the_encoder_objective_in_the_diffusion_stage(tmp_path):
  config = tiny_config(**{"train.steps": 20, "train.joint_encoder_weight": 1.0})
  res = experiment.run(config, tmp_path)
  assert res["steps_run"] == 40 and res["n_users"]["test"] > 0
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  diffusion = [r for r in rows if r["kind"] == "train" and r["stage"] == "diffusion"]
  assert diffusion and all(np.isfinite(r["encoder_loss/tgt"]) and "rec_loss" in r
                           for r in diffusion)


def test_itstime_decides_every_periodic_action():
  """Log, eval and checkpoint run every `every` steps and after the last step; every <= 0: last only."""
  assert [s for s in range(1, 11) if train.itstime(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 11) if train.itstime(s, 0, 10)] == [10]
  assert [s for s in range(1, 7) if train.itstime(s, 3, 6)] == [3, 6]


def test_pending_losses_name_the_first_non_finite_step(tmp_path):
  """The loop reads its device losses only at log, eval and checkpoint steps; the read names the first
  non-finite step among all the steps since the last read, and returns the last loss otherwise."""
  pending = train._PendingLosses()
  ckpt = train.ckpt_lib.Checkpointer(tmp_path)
  for step, value in ((1, 2.0), (2, 1.5)):
    pending.add(step, "encoder", jnp.asarray(value))
  assert pending.check(tmp_path, ckpt) == 1.5
  for step, value in ((3, 1.0), (4, float("inf")), (5, float("nan"))):
    pending.add(step, "diffusion", jnp.asarray(value))
  with pytest.raises(train.NonFiniteLossError, match=r"loss is inf at step 4 \(diffusion stage\)"):
    pending.check(tmp_path, ckpt)
  ckpt.close()
