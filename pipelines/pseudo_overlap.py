"""Language clues (pseudo-overlap) for every user who needs one in a direction (DESIGN.md §2, §5).

  python -m pipelines.pseudo_overlap --config=configs/X.py \\
      --backend={anthropic,anthropic_batch,bridge,replay} --out=DIR \\
      [--users=POOL --limit=N --model=NAME --concurrency=N --dry_run] [--config.direction=B2A ...]

Users needing clues in S->T: the single-domain source pool (`--users=A_only` for A2B, or `single`),
training overlap users (`overlap`, shown only their source side), `valid` and `test` users; `all` (the
default) is all of them in that order. `--limit=N` takes the first N. For each user:

  prompt (prompts.py) -> answer (backends/; cached, cache.py) -> parse (parsing.py; one repair
  follow-up for an unusable answer) -> map descriptions to target items (mapping.py) -> ClueSet row

(llm_run.py; the bridge, bridge_run.py). This module is the entry point: the flags (one per field of
`options.Options`) and `run(config, Options)`, which checks the options, takes the --out lock, selects
the users and hands them to the run of the backend; summary.py builds what both runs report.

Output, under --out: `<direction>/shard-*.npz` + `index.json` (lgcd_jax.data.clue_records; point
config.clues.clue_dir at --out), `summary.json` (and a copy `summary_<direction>.json`),
`failures_<direction>.jsonl` (one line per failed user: pool, user, reason, detail), `cache/` (every
answer; --cache_dir moves it), `batch_state.json` (anthropic_batch), and for configs on synthetic data the
prepared dataset under `data/`. Rows of users this run did not ask for are kept from an earlier run's
shards (--nomerge replaces them). Rerunning the same command resumes: cached answers are reused, open
batches are polled again, and no paid answer is requested twice.

The anthropic backends need ANTHROPIC_API_KEY in the environment (checked before any work) and honour
ANTHROPIC_BASE_URL; the key is never logged or written. --dry_run prints the number of requests, the
estimated tokens and cost, and sends nothing (it needs no key). The bridge (no LLM, DESIGN.md §5) writes
the same shards and summary from `lgcd_jax.clues.bridge.make_bridge_clues`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from lgcd_jax import cli, config_check, workdir_lock
from lgcd_jax.data import loading
from lgcd_jax.data.errors import DataError
from pipelines import backends, users
from pipelines.bridge_run import dry_run as bridge_dry_run
from pipelines.bridge_run import run_bridge
from pipelines.llm_run import run_llm
from pipelines.options import LLM_BACKENDS, Options, PipelineError, check, flag_specs


def run(config, opts: Options) -> dict:
  """Runs the pipeline; returns the summary (also written to --out/summary.json)."""
  start = time.perf_counter()
  check(opts)
  direction = config.direction
  if opts.backend in LLM_BACKENDS and not opts.dry_run:
    try:
      backends.require_api_key()
    except backends.FatalError as e:
      raise PipelineError(str(e)) from None
  out = Path(opts.out)
  out.mkdir(parents=True, exist_ok=True)
  workdir_lock.acquire(out, "--out")  # one process per --out (its shards, summary and cache)
  ds = loading.load_dataset(config, out)
  try:
    tasks = users.select_users(ds, direction, opts.users, opts.limit)
  except ValueError as e:
    raise PipelineError(str(e)) from None
  if opts.backend == "bridge":
    if opts.dry_run:
      return bridge_dry_run(config, tasks)
    return run_bridge(config, opts, ds, tasks, start)
  return run_llm(config, opts, ds, tasks, start)


# ---- the command line ---------------------------------------------------------------------------


class _Redact(logging.Filter):
  """Defence in depth: no log line may carry the API key, whoever formats it."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    clean = backends.redact(message)
    if clean != message:
      record.msg, record.args = clean, None
    return True


def _define_flags():
  """One flag per field of Options: its name, default, help and (for enums) choices."""
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.",
                                  lock_config=True)
  define = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer, "float": flags.DEFINE_float,
            "str": flags.DEFINE_string}
  for name, kind, default, help_, choices in flag_specs():
    if choices is not None:
      flags.DEFINE_enum(name, default, choices, help_)
    else:
      define[kind](name, default, help_)
  flags.mark_flags_as_required(["config", "backend", "out"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  if not os.environ.get("ANTHROPIC_LOG"):  # the SDK's own switch for its (and httpx2's) debug logs
    for name in ("anthropic", "httpx2"):
      logging.getLogger(name).setLevel(logging.WARNING)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_Redact())
  fl = flags.FLAGS
  opts = Options(**{f.name: fl[f.name].value for f in dataclasses.fields(Options)})
  config = cli.config_value("config")
  try:
    config_check.validate(config)
    summary = run(config, opts)
  except (PipelineError, DataError, cli.UserError) as e:
    print(f"error: {backends.redact(e)}", file=sys.stderr)
    sys.exit(2)
  if not opts.dry_run:
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser)
