"""The Message Batches backend with the official SDK against the fake server: custom_ids, errored and
expired requests, the repair batch, and resuming (never resubmitting) a batch after a stop or SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipeline_fixtures as pf
from conftest import tiny_config
from lgcd_jax.data.clue_records import load_clues
from lgcd_jax.data.prepared import load_prepared
from pipelines import cache as cache_lib
from pipelines import fake_anthropic as fa
from pipelines import prompts
from pipelines.pseudo_overlap import Options, PipelineError, run

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-ant-FAKE-batch-0123456789"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return pf.write_tiny_world(tmp_path_factory, "batch", seed=1)


@pytest.fixture
def config(data_dir):
  return tiny_config(data_dir=str(data_dir))


@pytest.fixture
def server(data_dir, monkeypatch):
  titles = load_prepared(data_dir).titles["B"]
  with pf.fake_server(monkeypatch, FAKE_KEY, titles, batch_polls=2) as s:
    yield s


def options(out, **kw) -> Options:
  base = dict(backend="anthropic_batch", out=str(out), poll_interval=0.01, backoff_base=0.01,
              backoff_max=0.05, progress=False)
  base.update(kw)
  return Options(**base)


def polls(server) -> int:
  return sum(1 for e in server.log if e["method"] == "GET" and not e["path"].endswith("/results"))


def test_batch_errors_repairs_and_resubmission(config, server, tmp_path):
  def outcome(position, params):
    if len(params["messages"]) > 1:
      return None  # repair requests answer normally
    return {0: fa.ok("I would suggest some pans."), 1: "errored", 4: "expired"}.get(position)

  server.batch_outcome = outcome
  out = tmp_path / "out"
  summary = run(config, options(out, limit=8))
  assert summary["source"] == "anthropic_batch:claude-haiku-4-5"
  assert summary["batches_submitted"] == 2 and summary["requests_sent"] == 9  # 8 + 1 repair
  assert summary["users_succeeded"] == 6 and summary["repairs_succeeded"] == 1
  assert summary["failure_reasons"] == {"batch_errored": 1, "batch_expired": 1}
  assert "Batches" in summary["cost_note"]
  assert summary["estimated_cost_usd"] == pytest.approx(
      0.5 * (summary["input_tokens"] + 5 * summary["output_tokens"]) / 1e6, abs=1e-6)
  created = server.batch_creations()
  first = created[0]["body"]["requests"]
  assert len(first) == 8 and len(created[1]["body"]["requests"]) == 1
  for req in first:  # custom_id is the cache key of exactly these params
    p = req["params"]
    assert req["custom_id"] == cache_lib.request_key(p["model"], prompts.PROMPT_VERSION, p["system"],
                                                     p["messages"], p["max_tokens"])
  state = json.loads((out / "batch_state.json").read_text())["batches"]
  assert [b["status"] for b in state] == ["fetched", "fetched"] and [b["stage"] for b in state] == [
      "initial", "repair"]
  assert len(load_clues(out, "A2B")) == 6

  # Errored / expired answers were not cached: the rerun resubmits just those two.
  server.batch_outcome = lambda position, params: None
  again = run(config, options(out, limit=8))
  assert again["batches_submitted"] == 1 and again["requests_sent"] == 2 and again["cache_hits"] == 7
  assert len(server.batch_creations()[-1]["body"]["requests"]) == 2
  assert again["users_succeeded"] == 8 and len(load_clues(out, "A2B")) == 8


def test_stopped_while_polling_resumes_the_same_batch(config, server, tmp_path):
  server.hold_batches = True
  out = tmp_path / "out"
  with pytest.raises(PipelineError, match="still in_progress.*rerun"):
    run(config, options(out, limit=4, batch_max_wait=0.2, poll_interval=0.02))
  state = json.loads((out / "batch_state.json").read_text())["batches"]
  assert len(state) == 1 and state[0]["status"] == "open" and len(state[0]["keys"]) == 4
  assert not (out / "A2B").exists()
  server.hold_batches = False
  summary = run(config, options(out, limit=4))
  assert len(server.batch_creations()) == 1 and summary["batches_submitted"] == 0
  assert summary["requests_sent"] == 0 and summary["users_succeeded"] == 4
  assert json.loads((out / "batch_state.json").read_text())["batches"][0]["status"] == "fetched"


def test_cli_killed_between_submit_and_fetch_polls_the_same_batch(data_dir, server, tmp_path):
  server.hold_batches = True
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "pipelines.pseudo_overlap", "--config=configs/tiny.py",
         f"--config.data_dir={data_dir}", "--backend=anthropic_batch", f"--out={out}", "--limit=5",
         "--poll_interval=0.05", "--noprogress"]
  env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
  env.update(ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.url, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 60
  try:
    while polls(server) < 2:  # submitted, and polling
      assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never polled"
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=30)
  state = json.loads((out / "batch_state.json").read_text())["batches"]
  assert len(state) == 1 and state[0]["status"] == "open"
  server.hold_batches = False
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=120)
  assert done.returncode == 0, done.stderr.decode()[-3000:]
  assert len(server.batch_creations()) == 1  # polled again, never resubmitted
  summary = json.loads((out / "summary.json").read_text())
  assert summary["users_succeeded"] == 5 and summary["batches_submitted"] == 0
  assert len(load_clues(out, "A2B")) == 5
