"""The options of a pseudo-overlap run: one field per command-line flag (same name, default and help).

`pseudo_overlap.py` defines its flags from these fields, so the CLI and the Python API
(`run(config, Options(...))`) cannot drift apart.
"""

from __future__ import annotations

import dataclasses

from pipelines import users

DEFAULT_MODEL = "claude-haiku-4-5"
BACKENDS = ("anthropic", "anthropic_batch", "bridge", "replay")
LLM_BACKENDS = ("anthropic", "anthropic_batch")


class PipelineError(RuntimeError):
  """A run that cannot start or continue; the message says what to do."""


def _flag(default, help_: str, choices: tuple[str, ...] | None = None):
  """A field with its flag's help (and, for an enum flag, its choices)."""
  metadata = {"help": help_, "choices": choices}
  if default is dataclasses.MISSING:
    return dataclasses.field(metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


_REQUIRED = dataclasses.MISSING


@dataclasses.dataclass
class Options:
  """The CLI flags (same names); the CLI takes its defaults and help from here."""

  backend: str = _flag(_REQUIRED, "Where the clues come from.", BACKENDS)
  out: str = _flag(_REQUIRED, "Output directory (shards, summary, cache); rerun to resume.")
  users: str = _flag("all", "Which users: the single-domain source pool (single, or A_only for A2B / "
                     "B_only for B2A), overlap, valid, test, or all of them.", users.USER_CHOICES)
  limit: int = _flag(0, "Only the first N users needing clues (0: all).")
  model: str = _flag(DEFAULT_MODEL, "Anthropic model name.")
  concurrency: int = _flag(8, "Requests in flight (anthropic backend).")
  dry_run: bool = _flag(False, "Print requests, tokens and cost it would spend; send nothing.")
  max_tokens: int = _flag(512, "max_tokens of each request.")
  nk: int = _flag(5, "Target items kept per description (nearest by cosine).")
  sim_floor: float = _flag(0.3, "Matches under this cosine are dropped (hallucinated).")
  clue_len: int = _flag(0, "Keep at most this many mapped items per user (0: all).")
  num_items: int = _flag(10, "Target-domain descriptions asked for per user.")
  num_examples: int = _flag(3, "In-context examples (training overlap users).")
  max_titles: int = _flag(30, "Most recent distinct source titles in a prompt.")
  max_history_chars: int = _flag(3000, "Character budget of a user's titles.")
  max_title_chars: int = _flag(150, "A title is cut to this many characters.")
  seed: int = _flag(-1, "Seed of the in-context examples (-1: config.seed).")
  domain_a_name: str = _flag("", "Name of domain A in prompts (e.g. 'Grocery & Gourmet Food'); default "
                             "'domain A' ('groceries' on synthetic data).")
  domain_b_name: str = _flag("", "Name of domain B in prompts (e.g. 'Home & Kitchen').")
  cache_dir: str = _flag("", "Response cache (default OUT/cache).")
  replay: str = _flag("", "replay backend: a cache directory or a JSONL file of answers.")
  max_attempts: int = _flag(6, "Attempts per request on 429/5xx/529/timeouts.")
  backoff_base: float = _flag(1.0, "Seconds before the first retry (doubles, with jitter).")
  backoff_max: float = _flag(60.0, "Longest backoff between attempts, in seconds.")
  timeout: float = _flag(120.0, "Per-request timeout in seconds.")
  poll_interval: float = _flag(30.0, "Seconds between batch polls.")
  batch_size: int = _flag(10000, "Requests per Message Batch (at most 100000).")
  batch_max_wait: float = _flag(26 * 3600.0, "Stop polling after this many seconds (rerun resumes).")
  price_per_mtok: str = _flag("", "IN,OUT USD per million tokens (overrides the table).")
  merge: bool = _flag(True, "Keep earlier rows of users this run does not ask for.")
  shard_size: int = _flag(10000, "Users per clue shard.")
  progress: bool = _flag(True, "Show a progress bar.")


def flag_specs():
  """(name, type name, default or None when required, help, enum choices or None) of every flag."""
  for f in dataclasses.fields(Options):
    default = None if f.default is dataclasses.MISSING else f.default
    yield f.name, f.type, default, f.metadata["help"], f.metadata["choices"]


def check(opts: Options) -> None:
  """Raises PipelineError for options no run can use."""
  if opts.backend not in BACKENDS:
    raise PipelineError(f"--backend must be one of {BACKENDS}, got {opts.backend!r}")
  if not opts.out:
    raise PipelineError("--out is required")
  if opts.limit < 0 or opts.concurrency < 1 or opts.max_tokens < 16 or opts.nk < 1:
    raise PipelineError("need --limit >= 0, --concurrency >= 1, --max_tokens >= 16, --nk >= 1")
  if opts.num_items < 1 or opts.max_attempts < 1:
    raise PipelineError("need --num_items >= 1 and --max_attempts >= 1")
  if opts.backend == "replay" and not opts.replay:
    raise PipelineError("--backend=replay needs --replay=PATH (a cache directory or a JSONL file)")
  price_override(opts)


def price_override(opts: Options) -> tuple[float, float] | None:
  """--price_per_mtok as (input, output) USD per million tokens, or None for the price table."""
  if not opts.price_per_mtok:
    return None
  try:
    a, b = (float(x) for x in opts.price_per_mtok.split(","))
  except ValueError:
    raise PipelineError(f"--price_per_mtok must be IN,OUT (USD per million tokens), got "
                        f"{opts.price_per_mtok!r}") from None
  return a, b
