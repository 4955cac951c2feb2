"""anthropic_batch: the Message Batches API, custom_id = the request key (64 hex digits).

Each submitted batch id goes into `batch_state.json` in the output directory BEFORE polling, so a run
killed between submit and fetch resumes by polling the same batch on rerun instead of paying again.
Results are fetched into the cache; errored / expired / canceled requests are failures of this run and are
not cached, so a later run resubmits them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Sequence

from lgcd_jax.data import atomic
from lgcd_jax.data.errors import DataError
from pipelines.backends.base import BatchPending, Failure, OnDone, Outcome, Stats
from pipelines.backends.retry import Gate, RetryPolicy, status_outcome, with_retries
from pipelines.backends.sdk import client as make_client
from pipelines.backends.sdk import message_text, redact, token_usage
from pipelines.cache import ResponseCache
from pipelines.prompts import LLMRequest


class BatchState:
  """`batch_state.json`: every submitted batch, open until its results are in the cache."""

  def __init__(self, path: Path):
    self.path = Path(path)
    self.batches: list[dict] = []
    if self.path.exists():
      try:
        self.batches = list(json.loads(self.path.read_text(encoding="utf-8"))["batches"])
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"unreadable batch state ({e}); it lists paid batches: fix or move it "
                        "rather than deleting it", self.path) from None

  def save(self) -> None:
    atomic.atomic_write_json(self.path, {"batches": self.batches})

  def open(self) -> list[dict]:
    return [b for b in self.batches if b["status"] == "open"]

  def add(self, batch_id: str, keys: list[str], model: str, prompt_version: str, stage: str) -> dict:
    entry = {"id": batch_id, "status": "open", "model": model, "prompt_version": prompt_version,
             "stage": stage, "keys": keys,
             "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    self.batches.append(entry)
    self.save()
    return entry


class AnthropicBatchBackend:
  """The Message Batches API: submit, persist the id, poll, fetch results into the cache."""

  name = "anthropic_batch"
  uses_cache = True

  def __init__(self, model: str, cache: ResponseCache, state_path: str | os.PathLike, *,
               policy: RetryPolicy | None = None, poll_interval: float = 30.0,
               batch_size: int = 10000, max_wait: float = 26 * 3600.0):
    if batch_size < 1 or batch_size > 100_000:
      raise ValueError(f"batch_size must be in [1, 100000], got {batch_size}")
    self.model, self.cache = model, cache
    self.state = BatchState(Path(state_path))
    self.policy = policy or RetryPolicy()
    self.poll_interval, self.batch_size, self.max_wait = float(poll_interval), int(batch_size), max_wait
    self.stats = Stats()

  @property
  def source(self) -> str:
    return f"anthropic_batch:{self.model}"

  def complete(self, requests: Sequence[LLMRequest], *, stage: str = "initial",
               owners: dict | None = None, on_done: OnDone | None = None) -> dict[str, Outcome]:
    del owners
    if not requests:
      return {}
    return asyncio.run(self._complete(list(requests), stage, on_done or (lambda key: None)))

  async def _complete(self, requests: list[LLMRequest], stage: str, on_done: OnDone):
    by_key = {r.key: r for r in requests}
    failures: dict[str, Failure] = {}
    gate = Gate()
    in_open = {k for b in self.state.open() for k in b["keys"]}
    to_submit = [r for r in requests if r.key not in in_open and self.cache.get(r.key) is None]
    async with make_client(self.policy.timeout) as client:
      for lo in range(0, len(to_submit), self.batch_size):
        chunk = to_submit[lo:lo + self.batch_size]
        body = [{"custom_id": r.key, "params": r.params()} for r in chunk]
        batch = await self._submit(client, body, gate)
        if isinstance(batch, Failure):
          for r in chunk:
            failures[r.key] = batch
          continue
        self.stats.requests_sent += len(chunk)
        self.stats.batches_submitted += 1
        self.stats.batch_ids.append(batch.id)
        # Persisted before the first poll: a run killed from here on resumes this batch, never resubmits.
        self.state.add(batch.id, [r.key for r in chunk], self.model, chunk[0].prompt_version, stage)
      # This run's batches, and those a killed run left open for any of these requests. (An open batch
      # for other users, e.g. the other direction, is left to the run that asks for them.)
      for entry in [b for b in self.state.open() if not by_key.keys().isdisjoint(b["keys"])]:
        await self._wait(client, entry["id"], gate)
        await self._fetch(client, entry, by_key, failures, gate, on_done)
    out: dict[str, Outcome] = {}
    for key in by_key:
      hit = self.cache.get(key)
      out[key] = hit if hit is not None else failures.get(
          key, Failure("batch_missing_result", "the batch returned no result for this request"))
    return out

  async def _submit(self, client, body, gate):
    # A retry after a timeout could create a second (paid) batch, so only explicit refusals
    # (429/5xx status answers) are retried; a timeout fails these requests for this run.
    import anthropic  # pylint: disable=g-import-not-at-top  (the SDK loads only for requests: sdk.py)
    policy = self.policy
    for attempt in range(max(1, policy.max_attempts)):
      await gate.wait()
      try:
        return await client.messages.batches.create(requests=body)
      except anthropic.APIStatusError as e:
        reason, retryable = status_outcome(e, self.model)
        if not retryable or attempt + 1 >= policy.max_attempts:
          return Failure(f"batch_submit_{reason}", f"HTTP {e.status_code}: {redact(e.api_message or '')}")
        self.stats.retries += 1
        await asyncio.sleep(policy.delay(attempt, e.response.headers))
      except anthropic.APIConnectionError as e:
        return Failure("batch_submit_failed",
                       f"{type(e).__name__}: the batch may exist; check the console before rerunning")
    return Failure("batch_submit_failed", "no attempt made")

  async def _wait(self, client, batch_id: str, gate: Gate) -> None:
    start = time.monotonic()
    while True:
      batch = await with_retries(lambda: client.messages.batches.retrieve(batch_id), self.policy,
                                 self.stats, gate, self.model)
      if isinstance(batch, Failure):
        raise BatchPending(f"could not poll batch {batch_id} ({batch.reason}: {batch.detail}); "
                           "rerun the same command to resume it")
      if batch.processing_status == "ended":
        return
      if time.monotonic() - start > self.max_wait:
        raise BatchPending(f"batch {batch_id} is still {batch.processing_status} after "
                           f"{self.max_wait:g} s; rerun the same command to resume polling it")
      await asyncio.sleep(self.poll_interval)

  async def _fetch(self, client, entry: dict, by_key: dict, failures: dict, gate: Gate,
                   on_done: OnDone) -> None:
    async def read_all():
      rows = []
      async for row in await client.messages.batches.results(entry["id"]):
        rows.append(row)
      return rows

    rows = await with_retries(read_all, self.policy, self.stats, gate, self.model)
    if isinstance(rows, Failure):
      raise BatchPending(f"could not fetch the results of batch {entry['id']} ({rows.reason}); rerun "
                         "the same command to fetch them")
    for row in rows:
      key, result = row.custom_id, row.result
      if result.type == "succeeded":
        message = result.message
        tokens_in, tokens_out = token_usage(message)
        self.stats.responses += 1
        self.stats.input_tokens += tokens_in
        self.stats.output_tokens += tokens_out
        text = message_text(message)
        req = by_key.get(key)
        if req is not None:
          self.cache.put_answer(req, text, stop_reason=message.stop_reason, input_tokens=tokens_in,
                                output_tokens=tokens_out, response_id=message.id, backend=self.name)
        else:  # a batch of an earlier run for users this run does not ask for: keep what was paid
          self.cache.put(key, text, model=entry["model"], prompt_version=entry["prompt_version"],
                         stop_reason=message.stop_reason, input_tokens=tokens_in,
                         output_tokens=tokens_out, response_id=message.id, backend=self.name)
      else:
        detail = ""
        if result.type == "errored":
          err = getattr(result.error, "error", None)
          detail = redact(f"{getattr(err, 'type', '')}: {getattr(err, 'message', '')}")[:300]
        failures[key] = Failure(f"batch_{result.type}", detail)
      if key in by_key:
        on_done(key)
    entry["status"] = "fetched"
    entry["fetched_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    self.state.save()
