"""Language clues (pseudo-overlap) for every user who needs one in a direction (DESIGN.md §2, §5).

  python -m pipelines.pseudo_overlap --config=configs/X.py \\
      --backend={anthropic,anthropic_batch,bridge,replay} --out=DIR \\
      [--users=POOL --limit=N --model=NAME --concurrency=N --dry_run] [--config.direction=B2A ...]

Users needing clues in S->T: the single-domain source pool (`--users=A_only` for A2B, or `single`),
training overlap users (`overlap`, shown only their source side), `valid` and `test` users; `all` (the
default) is all of them in that order. `--limit=N` takes the first N. For each user:

  prompt (prompts.py) -> answer (backends.py; cached, cache.py) -> parse (parsing.py; one repair
  follow-up for an unusable answer) -> map descriptions to target items (mapping.py) -> ClueSet row

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

import collections
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from lgcd_jax.data import atomic
from lgcd_jax.data import clue_records as clues_lib
from lgcd_jax.data import loading
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import Ragged, direction_domains
from pipelines import backends, mapping, parsing, pricing, prompts, users
from pipelines.backends import Failure
from pipelines.cache import ResponseCache

DEFAULT_MODEL = "claude-haiku-4-5"
BACKENDS = ("anthropic", "anthropic_batch", "bridge", "replay")
LLM_BACKENDS = ("anthropic", "anthropic_batch")

log = logging.getLogger("pipelines.pseudo_overlap")


class PipelineError(RuntimeError):
  """A run that cannot start or continue; the message says what to do."""


@dataclasses.dataclass
class Options:
  """The CLI flags (same names); the CLI takes its defaults from here."""

  backend: str
  out: str
  users: str = "all"
  limit: int = 0
  model: str = DEFAULT_MODEL
  concurrency: int = 8
  dry_run: bool = False
  max_tokens: int = 512
  nk: int = 5
  sim_floor: float = 0.3
  clue_len: int = 0  # 0: keep every mapped item
  num_items: int = 10
  num_examples: int = 3
  max_titles: int = 30
  max_history_chars: int = 3000
  max_title_chars: int = 150
  seed: int = -1  # -1: config.seed
  domain_a_name: str = ""
  domain_b_name: str = ""
  cache_dir: str = ""
  replay: str = ""
  max_attempts: int = 6
  backoff_base: float = 1.0
  backoff_max: float = 60.0
  timeout: float = 120.0
  poll_interval: float = 30.0
  batch_size: int = 10000
  batch_max_wait: float = 26 * 3600.0
  price_per_mtok: str = ""
  merge: bool = True
  shard_size: int = 10000
  progress: bool = True


def _check(opts: Options) -> None:
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
  _price_override(opts)


def _price_override(opts: Options) -> tuple[float, float] | None:
  if not opts.price_per_mtok:
    return None
  try:
    a, b = (float(x) for x in opts.price_per_mtok.split(","))
  except ValueError:
    raise PipelineError(f"--price_per_mtok must be IN,OUT (USD per million tokens), got "
                        f"{opts.price_per_mtok!r}") from None
  return a, b


def _domain_names(opts: Options, ds, config=None) -> dict[str, str]:
  """Flags win; then the config's `clues.domain_names` ("A name|B name")."""
  from_config = ["", ""]
  if config is not None and config.clues.get("domain_names"):
    from_config = (config.clues.domain_names.split("|") + [""])[:2]
  names = {"A": opts.domain_a_name or from_config[0], "B": opts.domain_b_name or from_config[1]}
  if ds.manifest.get("source") == "synthetic":  # the embedded world: a grocery and a kitchenware store
    names = {"A": names["A"] or "groceries", "B": names["B"] or "kitchenware"}
  if not (names["A"] and names["B"]):
    log.warning("the prompt calls the domains 'domain A' / 'domain B': pass --domain_a_name and "
                "--domain_b_name (e.g. 'Grocery & Gourmet Food', 'Home & Kitchen') for real data")
  return names


def _quantiles(x: np.ndarray) -> dict | None:
  if len(x) == 0:
    return None
  q = np.quantile(np.asarray(x, np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
  return {k: round(float(v), 4) for k, v in zip(("min", "p25", "median", "p75", "max"), q)}


def _subset(c: clues_lib.ClueSet, rows) -> clues_lib.ClueSet:
  rows = np.asarray(rows, np.int64)
  items = [c.items[r] for r in rows]
  sims = [c.sims[c.items.offsets[r]:c.items.offsets[r + 1]] for r in rows]
  summaries = np.empty(len(rows), dtype=object)
  summaries[:] = [str(c.summaries[r]) for r in rows]
  return clues_lib.ClueSet(
      direction=c.direction, user_ids=np.asarray(c.user_ids)[rows], pools=np.asarray(c.pools)[rows],
      items=Ragged.from_lists(items),
      sims=(np.concatenate(sims) if sims else np.zeros(0)).astype(np.float32),
      summary_emb=np.asarray(c.summary_emb)[rows], has_summary=np.asarray(c.has_summary)[rows],
      summaries=summaries, source=c.source)


def _save(new: clues_lib.ClueSet, opts: Options, tasks, num_target: int) -> int:
  """Writes the shards (keeping earlier rows of users not asked for now); returns the row count."""
  out = Path(opts.out)
  merged = new
  if opts.merge and (out / new.direction / clues_lib.INDEX_NAME).exists():
    old = clues_lib.load_clues(out, new.direction, num_target_items=num_target)
    asked = {(t.pool, t.user_id) for t in tasks}
    keep = [r for r in range(len(old)) if (str(old.pools[r]), str(old.user_ids[r])) not in asked]
    if keep:
      try:
        merged = clues_lib.merge_clues([_subset(old, keep), new])
      except ValueError as e:
        raise PipelineError(f"cannot merge with the clues already in {out / new.direction} ({e}); "
                            "use another --out or --nomerge") from None
  clues_lib.save_clues(merged, out, shard_size=opts.shard_size)
  return len(merged)


def _write_summary(summary: dict, out: Path, direction: str) -> None:
  atomic.atomic_write_json(out / "summary.json", summary)
  atomic.atomic_write_json(out / f"summary_{direction}.json", summary)


class _Progress:
  """A tqdm bar over users, fed per finished request (a request may serve several users)."""

  def __init__(self, total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    self.bar = tqdm(total=total, desc=desc, unit="user", disable=not enabled or total == 0,
                    file=sys.stderr, mininterval=0.5, dynamic_ncols=True)

  def update(self, n: int) -> None:
    self.bar.update(n)

  def close(self) -> None:
    self.bar.close()


def _resolve(backend, cache: ResponseCache, reqs: dict[int, prompts.LLMRequest], tasks, stage: str,
             counters: collections.Counter, progress: bool) -> dict:
  """{key: outcome} for the requests of users `reqs` (row -> request): cache first, then the backend."""
  owners: dict[str, list[int]] = collections.defaultdict(list)
  unique: dict[str, prompts.LLMRequest] = {}
  for i, r in reqs.items():
    owners[r.key].append(i)
    unique.setdefault(r.key, r)
  bar = _Progress(len(reqs), f"{stage} ({backend.name})", progress)
  out, misses = {}, []
  for key, r in unique.items():
    hit = cache.get(key) if backend.uses_cache else None
    if hit is not None:
      out[key] = hit
      counters["cache_hits"] += 1
      bar.update(len(owners[key]))
    else:
      misses.append(r)
  try:
    out.update(backend.complete(
        misses, stage=stage,
        owners={k: [(tasks[i].pool, tasks[i].user_id) for i in v] for k, v in owners.items()},
        on_done=lambda key: bar.update(len(owners.get(key, ())))))
  finally:
    bar.close()
  return out


def _make_backend(opts: Options, cache: ResponseCache):
  policy = backends.RetryPolicy(max_attempts=opts.max_attempts, backoff_base=opts.backoff_base,
                                backoff_max=opts.backoff_max, timeout=opts.timeout)
  if opts.backend == "anthropic":
    return backends.AnthropicBackend(opts.model, cache, concurrency=opts.concurrency, policy=policy)
  if opts.backend == "anthropic_batch":
    return backends.AnthropicBatchBackend(opts.model, cache, Path(opts.out) / "batch_state.json",
                                          policy=policy, poll_interval=opts.poll_interval,
                                          batch_size=opts.batch_size, max_wait=opts.batch_max_wait)
  return backends.ReplayBackend(opts.replay)


def _dry_run(opts: Options, direction: str, tasks, first, cache: ResponseCache) -> dict:
  unique = {}
  for r in first:
    if r is not None and r.key not in unique:
      unique[r.key] = r
  llm = opts.backend in LLM_BACKENDS  # replay pays for nothing
  cached = {k for k in unique if cache.get(k) is not None} if llm else set()
  todo = [r for k, r in unique.items() if k not in cached] if llm else []
  n = len(todo)
  tokens_in = sum(pricing.estimate_tokens(r.prompt_chars()) for r in todo)
  typical_out = min(opts.max_tokens, 25 * opts.num_items + 40)
  batch = opts.backend == "anthropic_batch"
  cost, note = pricing.cost_usd(opts.model, tokens_in, n * typical_out, batch=batch,
                                override=_price_override(opts))
  cost_max, _ = pricing.cost_usd(opts.model, tokens_in, n * opts.max_tokens, batch=batch,
                                 override=_price_override(opts))
  report = {
      "dry_run": True, "backend": opts.backend, "model": opts.model, "direction": direction,
      "prompt_version": prompts.PROMPT_VERSION, "users_requested": len(tasks),
      "users_without_history": sum(1 for r in first if r is None), "unique_prompts": len(unique),
      "cached": len(cached), "requests": n, "estimated_input_tokens": tokens_in,
      "estimated_output_tokens": n * typical_out, "max_output_tokens": n * opts.max_tokens,
      "estimated_cost_usd": cost, "max_cost_usd": cost_max, "cost_note": note,
      "token_estimate": f"input: prompt characters / {pricing.CHARS_PER_TOKEN}; output: "
                        f"{typical_out} per request (max_tokens={opts.max_tokens} at most); repairs "
                        "not included",
  }
  return report


def run(config, opts: Options) -> dict:
  """Runs the pipeline; returns the summary (also written to --out/summary.json)."""
  start = time.perf_counter()
  _check(opts)
  direction = config.direction
  _, tgt = direction_domains(direction)
  if opts.backend in LLM_BACKENDS and not opts.dry_run:
    try:
      backends.require_api_key()
    except backends.FatalError as e:
      raise PipelineError(str(e)) from None
  out = Path(opts.out)
  out.mkdir(parents=True, exist_ok=True)
  from lgcd_jax import workdir_lock
  workdir_lock.acquire(out, "--out")  # one process per --out (its shards, summary and cache)
  ds = loading.load_dataset(config, out)
  try:
    tasks = users.select_users(ds, direction, opts.users, opts.limit)
  except ValueError as e:
    raise PipelineError(str(e)) from None
  if opts.backend == "bridge":
    if opts.dry_run:
      report = {"dry_run": True, "backend": "bridge", "direction": direction,
                "users_requested": len(tasks), "requests": 0, "estimated_cost_usd": 0.0}
      print(json.dumps(report, indent=2))
      return report
    return _run_bridge(config, opts, ds, tasks, start)

  seed = config.seed if opts.seed < 0 else opts.seed
  budget = prompts.Budget(max_titles=opts.max_titles, max_chars=opts.max_history_chars,
                          max_title_chars=opts.max_title_chars, num_items=opts.num_items,
                          num_examples=opts.num_examples)
  builder = prompts.PromptBuilder(ds, direction, model=opts.model, max_tokens=opts.max_tokens,
                                  budget=budget, seed=seed, domain_names=_domain_names(opts, ds, config),
                                  exclude_histories=users.held_out_histories(ds))
  cache = ResponseCache(opts.cache_dir or out / "cache")
  first = [builder.request(t.pool, t.user_id, t.source, row=t.row) if len(t.source) else None
           for t in tasks]
  if opts.dry_run:
    report = _dry_run(opts, direction, tasks, first, cache)
    print(json.dumps(report, indent=2))
    return report

  backend = _make_backend(opts, cache)
  counters: collections.Counter = collections.Counter()
  failures: dict[int, Failure] = {i: Failure("empty_history", "no source-domain items")
                                  for i, r in enumerate(first) if r is None}
  try:
    stage1 = _resolve(backend, cache, {i: r for i, r in enumerate(first) if r is not None}, tasks,
                      "initial", counters, opts.progress)
    parsed: dict[int, parsing.ParsedAnswer] = {}
    first_error: dict[int, parsing.ParseFailure] = {}
    repairs: dict[int, prompts.LLMRequest] = {}
    for i, r in enumerate(first):
      if r is None:
        continue
      outcome = stage1[r.key]
      if isinstance(outcome, Failure):
        failures[i] = outcome
        continue
      p = parsing.parse_answer(outcome.text, opts.num_items)
      if isinstance(p, parsing.ParseFailure):
        first_error[i] = p
        repairs[i] = prompts.repair_request(r, outcome.text, p.reason)
      else:
        parsed[i] = p
    stage2 = (_resolve(backend, cache, repairs, tasks, "repair", counters, opts.progress)
              if repairs else {})
  except backends.FatalError as e:
    raise PipelineError(f"{e} (answers received so far are cached; rerun to resume)") from None
  except backends.BatchPending as e:
    raise PipelineError(str(e)) from None
  for i, req in repairs.items():
    outcome, err = stage2[req.key], first_error[i]
    if isinstance(outcome, Failure):
      failures[i] = Failure(f"unparseable_{err.reason}",
                            f"{err.detail}; repair request failed ({outcome.reason})")
      continue
    p = parsing.parse_answer(outcome.text, opts.num_items)
    if isinstance(p, parsing.ParseFailure):
      failures[i] = Failure(f"unparseable_{p.reason}", f"{p.detail} (after one repair request)")
    else:
      parsed[i] = p
      counters["repairs_succeeded"] += 1

  # Mapping: every description of every parsed user in one pass through the encoder.
  from lgcd_jax.text.encoders import make_encoder, title_embeddings
  encoder = make_encoder(config)
  tgt_emb = title_embeddings(config, ds, [tgt], encoder)[tgt]
  mapper = mapping.Mapper(encoder, tgt_emb, nk=opts.nk, sim_floor=opts.sim_floor,
                          clue_len=opts.clue_len)
  ok = sorted(parsed)
  mapped = mapper.map_many([parsed[i].items for i in ok])
  summaries = [parsed[i].summary for i in ok]
  clueset = mapping.build_clueset(direction, backend.source, [tasks[i].pool for i in ok],
                                  [tasks[i].user_id for i in ok], mapped, summaries,
                                  mapper.embed_summaries(summaries), ds.num_items(tgt))
  rows_written = _save(clueset, opts, tasks, ds.num_items(tgt))

  failure_lines = "".join(
      json.dumps({"pool": tasks[i].pool, "user": tasks[i].user_id, "reason": f.reason,
                  "detail": backends.redact(f.detail)}, ensure_ascii=False) + "\n"
      for i, f in sorted(failures.items()))
  atomic.atomic_write_text(out / f"failures_{direction}.jsonl", failure_lines)

  stats = backend.stats
  n_desc = sum(m.num_descriptions for m in mapped)
  n_hall = sum(m.num_hallucinated for m in mapped)
  sims = np.concatenate([m.sims for m in mapped]) if mapped else np.zeros(0)
  cost, note = pricing.cost_usd(opts.model, stats.input_tokens, stats.output_tokens,
                                batch=opts.backend == "anthropic_batch",
                                override=_price_override(opts))
  if opts.backend == "replay":
    cost, note = 0.0, "replay sends no request"
  elapsed = time.perf_counter() - start
  summary = {
      "backend": opts.backend,
      "model": opts.model,
      "source": clueset.source,
      "prompt_version": prompts.PROMPT_VERSION,
      "direction": direction,
      "data": loading.describe(config, ds),
      "users": opts.users,
      "limit": opts.limit,
      "users_requested": len(tasks),
      "users_succeeded": len(ok),
      "users_failed": len(failures),
      "users_empty_clue": int(sum(1 for m in mapped if len(m.items) == 0)),
      "failure_reasons": dict(sorted(collections.Counter(f.reason for f in failures.values()).items())),
      "requests_sent": stats.requests_sent,
      "responses_received": stats.responses,
      "cache_hits": counters["cache_hits"],
      "repairs_requested": len(repairs),
      "repairs_succeeded": counters["repairs_succeeded"],
      "retries": stats.retries,
      "rate_limited": stats.rate_limited,
      "server_errors": stats.server_errors,
      "timeouts": stats.timeouts,
      "connection_errors": stats.connection_errors,
      "batches_submitted": stats.batches_submitted,
      "batch_ids": list(stats.batch_ids),
      "input_tokens": stats.input_tokens,
      "output_tokens": stats.output_tokens,
      "estimated_cost_usd": cost,
      "cost_note": note,
      "truncated_answers": int(sum(1 for i in ok if parsed[i].truncated)),
      "descriptions": n_desc,
      "descriptions_hallucinated": n_hall,
      "hallucinated_share": round(n_hall / n_desc, 4) if n_desc else None,
      "mapped_items_per_user": round(len(sims) / len(ok), 3) if ok else None,
      "mapped_similarity": _quantiles(sims),
      "mapping": {"encoder": encoder.name, "nk": opts.nk, "sim_floor": opts.sim_floor,
                  "clue_len": opts.clue_len},
      "shards": {"dir": str(out / direction), "rows": rows_written},
      "elapsed_seconds": round(elapsed, 3),
      "users_per_second": round(len(tasks) / elapsed, 3) if elapsed > 0 else None,
  }
  _write_summary(summary, out, direction)
  return summary


def _run_bridge(config, opts: Options, ds, tasks, start: float) -> dict:
  """The offline stand-in: neighbour (or text) clues for the selected users, as shards + summary."""
  from lgcd_jax.clues import bridge
  direction = config.direction
  src, tgt = direction_domains(direction)
  to_bridge = {f"{src}_only": "single", "overlap": "overlap", "valid": "valid", "test": "test"}
  pools = list(dict.fromkeys(to_bridge[t.pool] for t in tasks))
  titles = {}
  if config.clues.bridge_mode == "text" or config.clues.text_weight != 0:
    from lgcd_jax.text.encoders import title_embeddings
    titles = title_embeddings(config, ds, [src, tgt])
  stats: dict = {}
  clues = bridge.make_bridge_clues(
      ds, direction, mode=config.clues.bridge_mode, k=config.clues.bridge_k,
      clue_len=config.data.clue_len, text_weight=config.clues.text_weight,
      src_title_emb=titles.get(src), tgt_title_emb=titles.get(tgt), maxlen=config.data.maxlen,
      text_dim=config.clues.text_dim, pools=pools, progress=opts.progress, stats=stats,
      mf_rank=config.baselines.mf_rank, mf_item_power=config.baselines.mf_item_power)
  wanted = {(t.pool, t.user_id) for t in tasks}
  rows = [r for r in range(len(clues)) if (str(clues.pools[r]), str(clues.user_ids[r])) in wanted]
  if len(rows) != len(clues):
    clues = _subset(clues, rows)
  rows_written = _save(clues, opts, tasks, ds.num_items(tgt))
  lengths = clues.items.lengths()
  elapsed = time.perf_counter() - start
  summary = {
      "backend": "bridge",
      "model": None,
      "source": clues.source,
      "prompt_version": None,
      "direction": direction,
      "data": loading.describe(config, ds),
      "users": opts.users,
      "limit": opts.limit,
      "users_requested": len(tasks),
      "users_succeeded": len(clues),
      "users_failed": 0,
      "users_empty_clue": int(np.sum(lengths == 0)),
      "failure_reasons": {},
      "requests_sent": 0,
      "cache_hits": 0,
      "input_tokens": 0,
      "output_tokens": 0,
      "estimated_cost_usd": 0.0,
      "cost_note": "the bridge is an offline stand-in for an LLM: no request, no cost",
      "hallucinated_share": None,
      "mapped_items_per_user": round(float(lengths.mean()), 3) if len(clues) else None,
      "mapped_similarity": _quantiles(clues.sims),
      "similarity_note": "bridge sims are neighbour votes / the user's best vote, not cosines",
      "bridge": {"mode": config.clues.bridge_mode, "k": config.clues.bridge_k,
                 "clue_len": config.data.clue_len, "text_weight": config.clues.text_weight,
                 "pools": {k: v for k, v in stats.items() if isinstance(v, dict)},
                 "seconds": round(float(stats.get("seconds", 0.0)), 3)},
      "shards": {"dir": str(Path(opts.out) / direction), "rows": rows_written},
      "elapsed_seconds": round(elapsed, 3),
      "users_per_second": round(len(tasks) / elapsed, 3) if elapsed > 0 else None,
  }
  _write_summary(summary, Path(opts.out), direction)
  return summary


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
  from absl import flags
  from ml_collections import config_flags

  # Every default comes from Options, so the CLI and the Python API cannot drift apart.
  d = {f.name: f.default for f in dataclasses.fields(Options)}
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.",
                                  lock_config=True)
  flags.DEFINE_enum("backend", None, BACKENDS, "Where the clues come from.")
  flags.DEFINE_string("out", None, "Output directory (shards, summary, cache); rerun to resume.")
  flags.DEFINE_enum("users", d["users"], users.USER_CHOICES,
                    "Which users: the single-domain source pool (single, or A_only for A2B / B_only "
                    "for B2A), overlap, valid, test, or all of them.")
  flags.DEFINE_integer("limit", d["limit"], "Only the first N users needing clues (0: all).")
  flags.DEFINE_string("model", d["model"], "Anthropic model name.")
  flags.DEFINE_integer("concurrency", d["concurrency"], "Requests in flight (anthropic backend).")
  flags.DEFINE_bool("dry_run", d["dry_run"],
                    "Print requests, tokens and cost it would spend; send nothing.")
  flags.DEFINE_integer("max_tokens", d["max_tokens"], "max_tokens of each request.")
  flags.DEFINE_integer("nk", d["nk"], "Target items kept per description (nearest by cosine).")
  flags.DEFINE_float("sim_floor", d["sim_floor"],
                     "Matches under this cosine are dropped (hallucinated).")
  flags.DEFINE_integer("clue_len", d["clue_len"],
                       "Keep at most this many mapped items per user (0: all).")
  flags.DEFINE_integer("num_items", d["num_items"],
                       "Target-domain descriptions asked for per user.")
  flags.DEFINE_integer("num_examples", d["num_examples"],
                       "In-context examples (training overlap users).")
  flags.DEFINE_integer("max_titles", d["max_titles"],
                       "Most recent distinct source titles in a prompt.")
  flags.DEFINE_integer("max_history_chars", d["max_history_chars"],
                       "Character budget of a user's titles.")
  flags.DEFINE_integer("max_title_chars", d["max_title_chars"],
                       "A title is cut to this many characters.")
  flags.DEFINE_integer("seed", d["seed"], "Seed of the in-context examples (-1: config.seed).")
  flags.DEFINE_string("domain_a_name", d["domain_a_name"],
                      "Name of domain A in prompts (e.g. 'Grocery & Gourmet "
                      "Food'); default 'domain A' ('groceries' on synthetic data).")
  flags.DEFINE_string("domain_b_name", d["domain_b_name"],
                      "Name of domain B in prompts (e.g. 'Home & Kitchen').")
  flags.DEFINE_string("cache_dir", d["cache_dir"], "Response cache (default OUT/cache).")
  flags.DEFINE_string("replay", d["replay"],
                      "replay backend: a cache directory or a JSONL file of answers.")
  flags.DEFINE_integer("max_attempts", d["max_attempts"],
                       "Attempts per request on 429/5xx/529/timeouts.")
  flags.DEFINE_float("backoff_base", d["backoff_base"],
                     "Seconds before the first retry (doubles, with jitter).")
  flags.DEFINE_float("backoff_max", d["backoff_max"],
                     "Longest backoff between attempts, in seconds.")
  flags.DEFINE_float("timeout", d["timeout"], "Per-request timeout in seconds.")
  flags.DEFINE_float("poll_interval", d["poll_interval"], "Seconds between batch polls.")
  flags.DEFINE_integer("batch_size", d["batch_size"],
                       "Requests per Message Batch (at most 100000).")
  flags.DEFINE_float("batch_max_wait", d["batch_max_wait"],
                     "Stop polling after this many seconds (rerun "
                     "resumes).")
  flags.DEFINE_string("price_per_mtok", d["price_per_mtok"],
                      "IN,OUT USD per million tokens (overrides the table).")
  flags.DEFINE_bool("merge", d["merge"], "Keep earlier rows of users this run does not ask for.")
  flags.DEFINE_integer("shard_size", d["shard_size"], "Users per clue shard.")
  flags.DEFINE_bool("progress", d["progress"], "Show a progress bar.")
  flags.mark_flags_as_required(["config", "backend", "out"])


def main(argv) -> None:
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  if not os.environ.get("ANTHROPIC_LOG"):  # the SDK's own switch for its (and httpx2's) debug logs
    for name in ("anthropic", "httpx2"):
      logging.getLogger(name).setLevel(logging.WARNING)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_Redact())
  fl = flags.FLAGS
  from lgcd_jax import cli, config_check
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
  from absl import app as _app
  from lgcd_jax import cli as _cli
  _define_flags()
  _app.run(main, flags_parser=_cli.flags_parser)
