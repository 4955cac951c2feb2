"""Runs that cannot mislead or corrupt each other (issue 9): a resume must be of the same run, one
process per workdir, damaged checkpoints, and a user's mistakes as one line with exit status 2."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import TRAINED_TINY_OVERRIDES, tiny_config
from configs import tiny
from lgcd_jax import checkpoint, cli, config_check, experiment, workdir_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _copy(trained_tiny, tmp_path, name="copy"):
  copy = tmp_path / name
  shutil.copytree(trained_tiny[0], copy)
  return copy


# --- item 1: a rerun with other settings does not report the old model ----------------------------


def test_resume_with_other_settings_stops_naming_the_fields_and_the_workdir(trained_tiny,
                                                                             tmp_path):
  copy = _copy(trained_tiny, tmp_path)
  for overrides, field in (({"seed": 1}, "seed: 0 -> 1"),
                           ({"model.use_pseudo": False}, "model.use_pseudo: True -> False"),
                           ({"train.pseudo_weight": 0.5}, "train.pseudo_weight: 0.3 -> 0.5")):
    with pytest.raises(cli.UserError, match="other settings") as e:
      experiment.run(tiny_config(**TRAINED_TINY_OVERRIDES, **overrides), copy)
    assert field in str(e.value) and str(copy) in str(e.value)
  assert json.loads((copy / "results.json").read_text())["config"]["seed"] == 0  # untouched


def test_fields_a_resume_may_change():
  base = tiny_config()
  ok = tiny_config(**{"train.steps": 999, "train.eval_every": 7, "train.log_every": 3,
                      "train.checkpoint_every": 5, "data.eval_batch_size": 8})
  assert config_check.resume_differences(base.to_json(), ok) == {}
  assert set(config_check.resume_differences(base.to_json(), tiny_config(**{
      "train.lr": 0.1, "model.d": 8}))) == {"train.lr", "model.d"}
  # A checkpoint written before a field existed resumes when the run keeps that field's default,
  # and not when it sets another value.
  old = json.loads(base.to_json())
  del old["train"]["from_guess_share"]
  assert config_check.resume_differences(json.dumps(old), base) == {}
  assert config_check.resume_differences(json.dumps(old), tiny_config(**{
      "train.from_guess_share": 0.5})) == {"train.from_guess_share": (0.0, 0.5)}


def test_default_workdir_carries_a_hash_of_the_overrides():
  base = tiny.get_config()
  name = lambda **o: experiment.default_workdir("configs/tiny.py", tiny_config(**o), base)
  assert name() == str(Path("workdirs") / "tiny-lgcd-A2B")
  assert name(**{"train.steps": 900}) == name()  # a longer run continues the same workdir
  seeds = {name(seed=s) for s in range(3)}
  assert len(seeds) == 3 and all(s.startswith(name() + "-") for s in seeds - {name()})
  assert name(**{"model.use_pseudo": False}) not in seeds
  assert name(method="dmcdr") == str(Path("workdirs") / "tiny-dmcdr-A2B")


def test_longer_train_steps_keeps_the_learning_rate_schedule_of_the_run_it_continues(
    trained_tiny, tmp_path, caplog):
  copy = _copy(trained_tiny, tmp_path)
  config = tiny_config(**{"train.steps": 30, "train.log_every": 5})
  with caplog.at_level(logging.WARNING):
    res = experiment.run(config, copy)
  assert res["steps_run"] == 50
  assert "learning-rate schedule is kept" in caplog.text
  rows = [json.loads(l) for l in (copy / "metrics.jsonl").read_text().splitlines()]
  at_45 = [r for r in rows if r["kind"] == "train" and r["step"] == 45][-1]
  # The first run's schedule ended at step 40 (20 + 20): after it, the final rate lr/10.
  assert at_45["lr"] == pytest.approx(config.train.lr * 0.1)
  meta = checkpoint.Checkpointer(copy).restore_meta(kind="latest")
  assert meta["schedule_steps"] == 40 and meta["step"] == 50


# --- item 11: one process per workdir --------------------------------------------------------------

_HOLDER = """
import sys, time
from lgcd_jax import workdir_lock
workdir_lock.acquire(sys.argv[1], "workdir")
workdir_lock.acquire(sys.argv[2], "--out")
workdir_lock.acquire(sys.argv[3], "--output", beside=True)
print("held", flush=True)
time.sleep(300)
"""


def test_a_second_process_on_a_held_directory_stops_at_once_naming_the_holder(tmp_path):
  work, out, prepared = tmp_path / "work", tmp_path / "out", tmp_path / "prepared"
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(work), str(out), str(prepared)],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    commands = [
        [sys.executable, "main.py", "--config=configs/tiny.py", f"--workdir={work}"],
        [sys.executable, "-m", "pipelines.pseudo_overlap", "--config=configs/tiny.py",
         "--backend=bridge", f"--out={out}"],
        [sys.executable, "-m", "lgcd_jax.data.prepare", "--source=synthetic",
         f"--output={prepared}", "--scale=0.1"],
    ]
    procs = [subprocess.Popen(c, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    for proc in procs:
      _, err = proc.communicate(timeout=120)
      assert proc.returncode == 2, err[-2000:]
      assert f"PID {holder.pid}" in err and "Traceback" not in err, err[-2000:]
    assert not prepared.exists() and not (out / "summary.json").exists()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The kernel released the killed holder's locks: nothing blocks now.
  for d, beside in ((work, False), (out, False), (prepared, True)):
    workdir_lock.acquire(d, beside=beside)
    workdir_lock.release(d, beside=beside)


# --- item 12: a damaged checkpoint ------------------------------------------------------------------


def _damage(step_dir: Path) -> None:
  """Truncates every array data file of a checkpoint step (a disk that lost its writes)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for p in files:
    p.write_bytes(p.read_bytes()[:7])


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_an_intact_one(
    trained_tiny, tmp_path, caplog):
  copy = _copy(trained_tiny, tmp_path)
  latest = checkpoint.Checkpointer(copy).latest_step()
  _damage(copy / "checkpoints" / "latest" / str(latest))
  with caplog.at_level(logging.WARNING):
    again = experiment.run(tiny_config(**TRAINED_TINY_OVERRIDES), copy)
  assert f"cannot read checkpoint {copy / 'checkpoints' / 'latest' / str(latest)}" in caplog.text
  assert any((copy / "checkpoints" / "damaged").iterdir())
  res = trained_tiny[1]
  assert again["test"] == res["test"] and again["steps_run"] == res["steps_run"]


def test_a_half_deleted_checkpoint_does_not_stop_a_run(trained_tiny, tmp_path, caplog):
  copy = _copy(trained_tiny, tmp_path)
  for kind in ("latest", "best"):  # no intact step at all: the run starts fresh
    for step in checkpoint.Checkpointer(copy).managers[kind].all_steps():
      shutil.rmtree(copy / "checkpoints" / kind / str(step) / "state")
  ckpt = checkpoint.Checkpointer(copy)
  config = tiny_config(**TRAINED_TINY_OVERRIDES)
  like = _like_state(config, copy)
  with caplog.at_level(logging.WARNING):
    assert ckpt.restore_newest_intact(like) is None
  assert caplog.text.count("cannot read checkpoint") == 2
  assert ckpt.latest_step() is None and ckpt.latest_step("best") is None


def _like_state(config, workdir):
  from lgcd_jax import builder
  from lgcd_jax.data import loading
  return builder.build(config, loading.load_dataset(config, workdir)).state


def test_recommend_and_bench_name_the_checkpoint_they_cannot_read(trained_tiny, tmp_path):
  copy = _copy(trained_tiny, tmp_path)
  best = checkpoint.Checkpointer(copy).latest_step("best")
  step_dir = copy / "checkpoints" / "best" / str(best)
  _damage(step_dir)
  inp = tmp_path / "users.jsonl"
  inp.write_text('{"user": "u", "source_items": [0]}\n')
  proc = subprocess.run([sys.executable, "-m", "lgcd_jax.recommend", f"--workdir={copy}",
                         f"--input={inp}", f"--output={tmp_path / 'recs.jsonl'}"],
                        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  _assert_one_error_line(proc, f"cannot read checkpoint {step_dir}")
  from lgcd_jax import bench
  with pytest.raises(cli.UserError, match=f"cannot read checkpoint {step_dir}"):
    bench.run(tiny_config(**TRAINED_TINY_OVERRIDES), str(copy), [64], ["float32"], 1, 1, True)


# --- item 13: a user's mistake is one line and exit status 2 ---------------------------------------


def _assert_one_error_line(proc, expected: str) -> None:
  err = proc.stderr
  assert proc.returncode == 2, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and expected in lines[0], err[-3000:]


def test_user_mistakes_end_with_one_error_line_and_exit_status_2(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  users = tmp_path / "users.jsonl"
  users.write_text('{"user": "u", "source_items": [0]}\n')
  py = sys.executable
  cases = [
      ([py, "main.py", "--config=configs/tiny.py", "--config.model.dd=3"],
       "unknown config field --config.model.dd in configs/tiny.py (did you mean --config.model.d?)"),
      ([py, "main.py", "--config=configs/tiny.py", "--config.method=foo",
        f"--workdir={tmp_path / 'w1'}"], "config.method must be one of"),
      ([py, "main.py", "--config=configs/tiny.py", "--config.seed=abc"], "--config.seed=abc"),
      ([py, "main.py", "--config=configs/tiny.py", "--config.data.real_pairs=cut",
        f"--workdir={tmp_path / 'w3'}"], "config.data.real_pairs must be one of whole, next"),
      ([py, "main.py", "--config=configs/nope.py"], "configs/nope.py"),
      ([py, "main.py", "--config=configs/tiny.py", f"--config.data_dir={tmp_path / 'none'}",
        f"--workdir={tmp_path / 'w2'}"], "no prepared dataset here"),
      ([py, "-m", "lgcd_jax.recommend", f"--workdir={empty}", f"--input={users}",
        f"--output={tmp_path / 'r.jsonl'}"], "no checkpoint at"),
      ([py, "-m", "lgcd_jax.recommend", f"--workdir={empty}", f"--input={tmp_path / 'no.jsonl'}",
        f"--output={tmp_path / 'r.jsonl'}"], "no such file"),
      ([py, "-m", "lgcd_jax.bench", "--config=configs/tiny.py", "--config.train.setps=3"],
       "did you mean --config.train.steps?"),
      ([py, "-m", "pipelines.pseudo_overlap", "--config=configs/tiny.py", "--backend=bridge",
        f"--out={tmp_path / 'o'}", "--config.clues.bridge_kk=3"],
       "did you mean --config.clues.bridge_k?"),
      ([py, "-m", "pipelines.pseudo_overlap", "--config=configs/tiny.py", "--backend=bridge",
        f"--out={tmp_path / 'o2'}", "--config.direction=X2Y"], "config.direction must be one of"),
      ([py, "-m", "lgcd_jax.data.prepare", "--source=llmcdsr", f"--input={tmp_path / 'no_in'}",
        f"--output={tmp_path / 'p'}"], "no such file or directory"),
      ([py, "-m", "lgcd_jax.data.prepare", "--source=llmcdsr", f"--output={tmp_path / 'p2'}"],
       "needs --input"),
      ([py, "-m", "lgcd_jax.data.stats", str(tmp_path / "no_stats")], "not a prepared dataset"),
  ]
  done = []
  for i in range(0, len(cases), 4):  # a few at a time: the machine has few cores
    batch = [(subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True), expected)
             for cmd, expected in cases[i:i + 4]]
    for proc, expected in batch:
      _, err = proc.communicate(timeout=300)
      done.append((types.SimpleNamespace(returncode=proc.returncode, stderr=err), expected))
  for result, expected in done:
    _assert_one_error_line(result, expected)
