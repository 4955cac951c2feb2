"""An LLM run (`--backend=anthropic`, `anthropic_batch` or `replay`): for each selected user,

  prompt (prompts.py) -> answer (backends/; cached, cache.py) -> parse (parsing.py; one repair
  follow-up for an unusable answer) -> map descriptions to target items (mapping.py) -> ClueSet row

then the shards, `failures_<direction>.jsonl` and the summary under --out. `dry_run` counts the requests
and estimates their tokens and cost instead, sending nothing.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lgcd_jax.data import atomic
from lgcd_jax.data.prepared import direction_domains
from lgcd_jax.text.encoders import make_encoder, title_embeddings
from pipelines import backends, mapping, parsing, pricing, prompts, shards, summary, users
from pipelines.backends import Failure
from pipelines.cache import ResponseCache
from pipelines.options import LLM_BACKENDS, Options, PipelineError, price_override

log = logging.getLogger("pipelines.pseudo_overlap")


def domain_names(opts: Options, ds, config=None) -> dict[str, str]:
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


class _Progress:
  """A tqdm bar over users, fed per finished request (a request may serve several users)."""

  def __init__(self, total: int, desc: str, enabled: bool):
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


def make_backend(opts: Options, cache: ResponseCache):
  """The backend of --backend (anthropic, anthropic_batch or replay) with the run's retry policy."""
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
                                override=price_override(opts))
  cost_max, _ = pricing.cost_usd(opts.model, tokens_in, n * opts.max_tokens, batch=batch,
                                 override=price_override(opts))
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


def run_llm(config, opts: Options, ds, tasks, start: float) -> dict:
  """Clues for `tasks` from the LLM backend of `opts`; returns the summary (or the dry-run report)."""
  direction = config.direction
  _, tgt = direction_domains(direction)
  out = Path(opts.out)
  seed = config.seed if opts.seed < 0 else opts.seed
  budget = prompts.Budget(max_titles=opts.max_titles, max_chars=opts.max_history_chars,
                          max_title_chars=opts.max_title_chars, num_items=opts.num_items,
                          num_examples=opts.num_examples)
  builder = prompts.PromptBuilder(ds, direction, model=opts.model, max_tokens=opts.max_tokens,
                                  budget=budget, seed=seed, domain_names=domain_names(opts, ds, config),
                                  exclude_histories=users.held_out_histories(ds))
  cache = ResponseCache(opts.cache_dir or out / "cache")
  first = [builder.request(t.pool, t.user_id, t.source, row=t.row) if len(t.source) else None
           for t in tasks]
  if opts.dry_run:
    report = _dry_run(opts, direction, tasks, first, cache)
    print(json.dumps(report, indent=2))
    return report

  backend = make_backend(opts, cache)
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
  rows_written = shards.save(clueset, opts, tasks, ds.num_items(tgt))

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
                                override=price_override(opts))
  if opts.backend == "replay":
    cost, note = 0.0, "replay sends no request"
  counts = {
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
      "mapped_similarity": summary.quantiles(sims),
      "mapping": {"encoder": encoder.name, "nk": opts.nk, "sim_floor": opts.sim_floor,
                  "clue_len": opts.clue_len},
  }
  result = summary.build(
      config, ds, opts, tasks, backend=opts.backend, model=opts.model, source=clueset.source,
      prompt_version=prompts.PROMPT_VERSION, succeeded=len(ok), failed=len(failures),
      empty_clue=int(sum(1 for m in mapped if len(m.items) == 0)),
      failure_reasons=dict(sorted(collections.Counter(f.reason for f in failures.values()).items())),
      requests_sent=stats.requests_sent, counts=counts, rows_written=rows_written, start=start)
  summary.write(result, out, direction)
  return result
