"""The Messages API backend end to end, with the official SDK against a local fake server.

Covers: shards + summary, bounded concurrency, retries (429 with retry-after, 500, 529, timeouts),
bounded attempts, the repair follow-up, truncated answers, resuming from the cache, dry runs, missing and
refused keys, replay, the key never written or logged, and a run killed with SIGKILL then rerun.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pipeline_fixtures as pf
from conftest import tiny_config
from lgcd_jax.data.clue_records import load_clues
from lgcd_jax.data.prepared import load_prepared
from pipelines import cache as cache_lib
from pipelines import fake_anthropic as fa
from pipelines import prompts, users
from pipelines.pseudo_overlap import Options, PipelineError, run

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-ant-FAKE-0123456789-leakcheck"
BRIEF_FIELDS = ("users_requested", "users_succeeded", "users_failed", "failure_reasons", "requests_sent",
                "cache_hits", "input_tokens", "output_tokens", "estimated_cost_usd",
                "mapped_similarity", "hallucinated_share", "backend", "model", "prompt_version",
                "direction", "elapsed_seconds", "users_per_second")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return pf.write_tiny_world(tmp_path_factory, "pipelines", seed=0)


@pytest.fixture(scope="module")
def ds(data_dir):
  return load_prepared(data_dir)


@pytest.fixture
def config(data_dir):
  return tiny_config(data_dir=str(data_dir))


@pytest.fixture
def server(ds, monkeypatch):
  with pf.fake_server(monkeypatch, FAKE_KEY, ds.titles["B"]) as s:
    yield s


def options(out, **kw) -> Options:
  base = dict(backend="anthropic", out=str(out), backoff_base=0.01, backoff_max=0.05, timeout=5.0,
              progress=False, concurrency=4)
  base.update(kw)
  return Options(**base)


def user_message_answers(server) -> dict[str, dict]:
  """{first user message: parsed default answer} for every answered first request."""
  out = {}
  for body in server.message_bodies():
    if len(body["messages"]) == 1:
      out[body["messages"][0]["content"]] = json.loads(server.default_answer(body))
  return out


def test_run_writes_shards_and_summary(config, ds, server, tmp_path):
  server.latency = 0.05
  summary = run(config, options(tmp_path / "out", limit=10, concurrency=3))
  for field in BRIEF_FIELDS:
    assert field in summary, field
  assert summary["users_requested"] == summary["users_succeeded"] == 10
  assert summary["users_failed"] == 0 and summary["requests_sent"] == 10
  assert summary["cache_hits"] == 0 and summary["source"] == "anthropic:claude-haiku-4-5"
  assert 1 < server.max_in_flight <= 3  # concurrent, and bounded by --concurrency
  # Every request carried the key; tokens add up to what the server billed; haiku-4-5 is $1/$5.
  assert {e["auth"] for e in server.log} == {"bearer"}
  bodies = server.message_bodies()
  billed_in = sum(len(json.dumps(b["messages"])) // 4 + len(b["system"]) // 4 for b in bodies)
  assert summary["input_tokens"] == sum(
      (len(json.dumps(b["messages"])) + len(b["system"])) // 4 + 1 for b in bodies) >= billed_in
  assert summary["output_tokens"] == sum(len(server.default_answer(b)) // 4 + 1 for b in bodies)
  assert summary["estimated_cost_usd"] == pytest.approx(
      (summary["input_tokens"] * 1 + summary["output_tokens"] * 5) / 1e6, abs=1e-6)
  assert summary["hallucinated_share"] == 0.0 and summary["mapped_similarity"]["max"] == 1.0
  saved = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert saved == summary == json.loads((tmp_path / "out" / "summary_A2B.json").read_text())

  clues = load_clues(tmp_path / "out", "A2B", num_target_items=ds.num_items("B"))
  assert clues.source == "anthropic:claude-haiku-4-5" and clues.text_dim == config.clues.text_dim
  tasks = users.select_users(ds, "A2B", limit=10)
  assert sorted(clues.user_ids.tolist()) == sorted(t.user_id for t in tasks)
  assert set(clues.pools.tolist()) == {"A_only"} and clues.has_summary.all()
  # The answer named exact target titles: each maps to itself first, with cosine 1.
  builder = prompts.PromptBuilder(ds, "A2B", model="m", max_tokens=1,
                                  domain_names={"A": "groceries", "B": "kitchenware"})
  answers = user_message_answers(server)
  title_index = {t: i for i, t in enumerate(ds.titles["B"])}
  for t in tasks:
    row = clues.lookup("A_only", t.user_id)
    answer = answers[builder.user_message(t.source)]
    assert clues.items[row][0] == title_index[answer["items"][0]]
    assert clues.sims[clues.items.offsets[row]] == pytest.approx(1.0, abs=1e-5)
    assert clues.summaries[row] == answer["summary"]
    mapped = set(clues.items[row].tolist())
    assert {title_index[x] for x in answer["items"]} <= mapped


def test_retries_honour_retry_after_and_recover(config, server, tmp_path):
  server.script(fa.rate_limited(0.4), fa.overloaded(), fa.server_error(500), fa.slow(3.0))
  summary = run(config, options(tmp_path / "out", limit=2, concurrency=1, timeout=0.5))
  assert summary["users_succeeded"] == 2 and summary["users_failed"] == 0
  assert summary["rate_limited"] == 1 and summary["server_errors"] == 2 and summary["timeouts"] == 1
  assert summary["retries"] == 4 and summary["requests_sent"] == 6
  log = [e for e in server.log if e["path"] == "/v1/messages"]
  assert [e["status"] for e in log[:3]] == [429, 529, 500]
  assert log[1]["t"] - log[0]["t"] >= 0.4  # waited the server's retry-after, not the 0.01 s backoff


def test_attempts_are_bounded_and_failures_are_not_cached(config, server, tmp_path):
  server.script(*[fa.server_error(503)] * 3, fa.bad_request())
  summary = run(config, options(tmp_path / "out", limit=2, concurrency=1, max_attempts=3))
  assert summary["users_failed"] == 2 and summary["users_succeeded"] == 0
  assert summary["failure_reasons"] == {"http_400": 1, "server_error": 1}
  assert summary["requests_sent"] == 4  # 3 attempts, then one 400 that is never retried
  failures = [json.loads(x) for x in (tmp_path / "out" / "failures_A2B.jsonl").read_text().splitlines()]
  assert [f["reason"] for f in failures] == ["server_error", "http_400"]
  # Nothing was stored for them: the rerun asks again, and this time the server answers.
  again = run(config, options(tmp_path / "out", limit=2, concurrency=1))
  assert again["users_succeeded"] == 2 and again["requests_sent"] == 2 and again["cache_hits"] == 0


def test_repair_follow_up_truncation_and_resume(config, ds, server, tmp_path):
  cut = json.dumps({"summary": "Bakes.", "items": [ds.titles["B"][5], ds.titles["B"][7],
                                                   "Cast iron skillet"]})
  cut = cut[:cut.index("Cast iron") + 3]
  server.script(fa.ok("They seem to like baking, so maybe pans?"),  # user 0: prose, no JSON
                fa.ok('{"summary": 7, "items": ["a"]}'),  # user 1: wrong type
                fa.ok(cut, stop_reason="max_tokens"),  # user 2: truncated, recoverable
                fa.ok(None),  # repair of user 0: a good answer
                fa.ok("still no json"))  # repair of user 1: fails again
  out = tmp_path / "out"
  summary = run(config, options(out, limit=3, concurrency=1, nk=1))
  assert summary["users_succeeded"] == 2 and summary["users_failed"] == 1
  assert summary["failure_reasons"] == {"unparseable_no_json_object": 1}
  assert summary["repairs_requested"] == 2 and summary["repairs_succeeded"] == 1
  assert summary["truncated_answers"] == 1 and summary["requests_sent"] == 5
  repair_bodies = [b for b in server.message_bodies() if len(b["messages"]) == 3]
  assert len(repair_bodies) == 2
  first = repair_bodies[0]["messages"]
  assert first[1] == {"role": "assistant", "content": "They seem to like baking, so maybe pans?"}
  assert "no_json_object" in first[2]["content"] and first[0]["role"] == "user"
  tasks = users.select_users(ds, "A2B", limit=3)
  clues = load_clues(out, "A2B")
  assert sorted(clues.user_ids.tolist()) == sorted([tasks[0].user_id, tasks[2].user_id])
  row = clues.lookup("A_only", tasks[2].user_id)
  assert clues.items[row][:2].tolist() == [5, 7] and clues.summaries[row] == "Bakes."
  failed = json.loads((out / "failures_A2B.jsonl").read_text())
  assert failed["user"] == tasks[1].user_id and failed["reason"] == "unparseable_no_json_object"

  # The rerun pays for nothing: first answers and repairs all come from the cache, same outcome.
  n_log = len(server.log)
  again = run(config, options(out, limit=3, concurrency=1, nk=1))
  assert len(server.log) == n_log and again["requests_sent"] == 0 and again["cache_hits"] == 5
  assert again["users_succeeded"] == 2 and again["failure_reasons"] == summary["failure_reasons"]


def test_resume_larger_limit_merge_and_dry_run(config, ds, server, tmp_path, capsys):
  out = tmp_path / "out"
  run(config, options(out, limit=4))
  more = run(config, options(out, limit=7))
  assert more["requests_sent"] == 3 and more["cache_hits"] == 4
  valid = run(config, options(out, users="valid", limit=2))
  assert valid["requests_sent"] == 2
  clues = load_clues(out, "A2B")
  # The valid run kept the 7 single-domain rows written before it.
  assert sorted(clues.pools.tolist()) == ["A_only"] * 7 + ["valid"] * 2
  n_log = len(server.log)
  report = run(config, options(out, limit=10, dry_run=True))
  assert len(server.log) == n_log  # sends nothing
  assert report["requests"] == 3 and report["cached"] == 7 and report["estimated_input_tokens"] > 0
  assert report["estimated_cost_usd"] > 0 and report["max_cost_usd"] >= report["estimated_cost_usd"]
  assert json.loads(capsys.readouterr().out)["requests"] == 3
  unknown = run(config, options(out, limit=10, dry_run=True, model="claude-unknown-9"))
  assert unknown["estimated_cost_usd"] is None and "no price" in unknown["cost_note"]


def test_missing_key_fails_before_any_work(config, server, tmp_path, monkeypatch):
  monkeypatch.delenv("ANTHROPIC_API_KEY")
  with pytest.raises(PipelineError, match="ANTHROPIC_API_KEY is not set"):
    run(config, options(tmp_path / "out", limit=2))
  assert server.log == [] and not (tmp_path / "out").exists()
  # A dry run needs no key.
  assert run(config, options(tmp_path / "dry", limit=2, dry_run=True))["requests"] == 2


def test_refused_key_stops_the_run(config, server, tmp_path, monkeypatch):
  monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
  with pytest.raises(PipelineError, match="HTTP 401"):
    run(config, options(tmp_path / "out", limit=6, concurrency=2))
  assert len(server.log) <= 2  # stopped at once, no retries of a hopeless request


def test_replay_from_cache_and_jsonl(config, ds, server, tmp_path):
  out = tmp_path / "out"
  run(config, options(out, limit=4))
  original = load_clues(out, "A2B")
  n_log = len(server.log)
  replayed = run(config, options(tmp_path / "replay", backend="replay", replay=str(out), limit=4))
  assert len(server.log) == n_log and replayed["users_succeeded"] == 4
  assert replayed["source"] == "replay" and replayed["estimated_cost_usd"] == 0.0
  again = load_clues(tmp_path / "replay", "A2B")
  for u in original.user_ids:
    r0, r1 = original.lookup("A_only", u), again.lookup("A_only", u)
    assert original.items[r0].tolist() == again.items[r1].tolist()
    np.testing.assert_allclose(original.summary_emb[r0], again.summary_emb[r1])

  tasks = users.select_users(ds, "A2B", limit=4)
  titles = ds.titles["B"]
  lines = [{"user": tasks[0].user_id, "text": fa.json_answer("s0", [titles[3]])},
           {"user": tasks[1].user_id, "pool": "A_only", "text": "```json\n" + fa.json_answer(
               "s1", [titles[4], titles[9]]) + "\n```"},
           {"user": tasks[2].user_id, "pool": "valid", "text": fa.json_answer("s2", [titles[1]])},
           {"custom_id": "0" * 64, "result": {"type": "errored"}}]
  path = tmp_path / "answers.jsonl"
  path.write_text("".join(json.dumps(x) + "\n" for x in lines))
  summary = run(config, options(tmp_path / "replay2", backend="replay", replay=str(path), limit=4,
                                nk=1))
  # tasks[2] is an A_only user: the line for pool "valid" is not theirs; tasks[3] has no line.
  assert summary["users_succeeded"] == 2 and summary["failure_reasons"] == {"not_in_replay": 2}
  clues = load_clues(tmp_path / "replay2", "A2B")
  assert clues.items[clues.lookup("A_only", tasks[0].user_id)][0] == 3
  assert clues.items[clues.lookup("A_only", tasks[1].user_id)][:2].tolist() == [4, 9]
  path.write_text('{"user": "x", "text": "a"}\nnot json\n')
  with pytest.raises(ValueError, match=r"answers.jsonl:2"):
    run(config, options(tmp_path / "replay3", backend="replay", replay=str(path), limit=1))


def _cli(out, data_dir, *extra):
  return [sys.executable, "-m", "pipelines.pseudo_overlap", "--config=configs/tiny.py",
          f"--config.data_dir={data_dir}", "--backend=anthropic", f"--out={out}",
          "--backoff_base=0.01", "--backoff_max=0.05", *extra]


def _env(server, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
  env.update(ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.url, JAX_PLATFORMS="cpu", **extra)
  return env


def test_cli_never_writes_or_logs_the_key(data_dir, server, tmp_path):
  server.script(fa.rate_limited(0.01), fa.server_error(500), fa.ok("no json"), fa.bad_request())
  out = tmp_path / "out"
  proc = subprocess.run(_cli(out, data_dir, "--config.direction=B2A", "--limit=6", "--concurrency=1",
                             "--users=B_only"),
                        cwd=REPO, env=_env(server, ANTHROPIC_LOG="debug"), capture_output=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["direction"] == "B2A" and summary["users_requested"] == 6
  assert summary["failure_reasons"] == {"http_400": 1} and summary["retries"] == 2
  assert {e["auth"] for e in server.log} == {"bearer"}  # the key was sent to the server...
  assert b"Request options" in proc.stderr  # the SDK's debug log was on: the most it ever prints
  key = FAKE_KEY.encode()
  assert key not in proc.stdout and key not in proc.stderr  # ...and is nowhere else
  files = [p for p in out.rglob("*") if p.is_file()]
  assert any(p.suffix == ".npz" for p in files) and any("cache" in p.parts for p in files)
  for p in files:
    assert key not in p.read_bytes(), p
  assert load_clues(out, "B2A").pools.tolist() == ["B_only"] * 5


def test_cli_killed_mid_run_resumes_without_paying_twice(data_dir, server, tmp_path):
  server.latency = 0.15
  out = tmp_path / "out"
  cmd = _cli(out, data_dir, "--limit=16", "--concurrency=2")
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(server), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 60
  try:
    while len(server.message_bodies()) < 6:
      assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never started"
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  stored = set(cache_lib.ResponseCache(out / "cache").keys())
  assert 4 <= len(stored) < 16 and not (out / "A2B" / "index.json").exists()
  n_log = len(server.log)

  server.latency = 0.0
  done = subprocess.run(cmd + ["--noprogress"], cwd=REPO, env=_env(server), capture_output=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr.decode()[-3000:]
  resent = [cache_lib.request_key(b["model"], prompts.PROMPT_VERSION, b["system"], b["messages"],
                                  b["max_tokens"])
            for e in server.log[n_log:] if e["path"] == "/v1/messages" for b in [e["body"]]]
  assert not stored & set(resent)  # no cached answer was paid for again
  summary = json.loads((out / "summary.json").read_text())
  assert summary["cache_hits"] == len(stored) and summary["requests_sent"] == 16 - len(stored)
  clues = load_clues(out, "A2B")
  assert len(clues) == 16 and summary["users_succeeded"] == 16


def test_log_lines_are_redacted(monkeypatch):
  import io
  import logging
  from pipelines.pseudo_overlap import _Redact
  monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
  stream = io.StringIO()
  handler = logging.StreamHandler(stream)
  handler.addFilter(_Redact())
  logger = logging.getLogger("test_pipelines_redact")
  logger.addHandler(handler)
  try:
    logger.warning("headers: %s", {"Authorization": f"Bearer {FAKE_KEY}"})
  finally:
    logger.removeHandler(handler)
  assert FAKE_KEY not in stream.getvalue() and "Bearer [REDACTED]" in stream.getvalue()
