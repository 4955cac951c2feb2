"""Where LLM answers come from: the Messages API, the Message Batches API, or a replay file.

Every backend answers `complete(requests, stage=..., owners=..., on_done=...)` with {request key: a
`cache.CachedResponse` or a `Failure`}. The two API backends store each answer in the response cache
before returning it (the pipeline has already served cached keys, so they only see misses); `on_done(key)`
is called as each request finishes (the progress bar).

anthropic: `AsyncAnthropic` from the official SDK, which reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL
  from the environment (nothing here ever touches the key). At most `concurrency` requests are in flight
  (that many workers share one request iterator). The SDK's own retries are off (max_retries=0) so that one
  bounded loop owns them: up to `max_attempts` attempts per request on 429 (honouring retry-after /
  retry-after-ms, and pausing every worker while rate limited), 408/409, 5xx (529 overloaded included),
  timeouts and connection errors, with exponential backoff and jitter in between. 400/413/422 fail the
  request; 401/403/404 stop the run (a bad key, no permission or an unknown model stays bad).
anthropic_batch: the Message Batches API, custom_id = the request key (64 hex digits). Each submitted
  batch id goes into `batch_state.json` in the output directory BEFORE polling, so a run killed between
  submit and fetch resumes by polling the same batch on rerun instead of paying again. Results are
  fetched into the cache; errored / expired / canceled requests are failures of this run and are not
  cached, so a later run resubmits them.
replay: answers from an earlier run, never an API call. PATH is either a cache directory (an earlier
  run's `--out/cache`, or that `--out` itself), looked up by request key (same model, prompt version and
  prompt), or a JSONL file with one object per line:
    {"custom_id": "<request key>", "text": "..."}        e.g. exported from a cache or a batch
    {"user": "<user id>", "pool": "<pool>", "text": "..."}   "pool" optional; by user id
    {"custom_id": ..., "result": {"type": "succeeded", "message": {"content": [{"type": "text",
     "text": "..."}]}}}                                 a Message Batches results file, as downloaded
  A line may give the answer as "text", as a Message ("content" blocks) or as a batch "result". User-id
  lines answer only first requests (not the repair follow-up, which has no line of its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Callable, Sequence

from lgcd_jax.data import atomic
from lgcd_jax.data.errors import DataError
from pipelines.cache import CachedResponse, ResponseCache
from pipelines.prompts import LLMRequest

API_KEY_ENV = "ANTHROPIC_API_KEY"


@dataclasses.dataclass(frozen=True)
class Failure:
  reason: str
  detail: str = ""


Outcome = CachedResponse | Failure
OnDone = Callable[[str], None]


class FatalError(RuntimeError):
  """A condition that no retry fixes (bad key, no permission, unknown model): the run stops."""


class BatchPending(RuntimeError):
  """Batches still processing when the run stopped waiting; rerunning the command resumes them."""


def redact(text: object) -> str:
  """`text` with the API key (when set) replaced, for anything that may be logged or written."""
  s = str(text)
  key = os.environ.get(API_KEY_ENV, "")
  if len(key) >= 4:
    s = s.replace(key, "[REDACTED]")
  return s


def require_api_key() -> None:
  if not os.environ.get(API_KEY_ENV, "").strip():
    raise FatalError(f"{API_KEY_ENV} is not set: the anthropic backends read the key from the "
                     "environment only (export it, or use --backend=bridge / --backend=replay, or "
                     "--dry_run to estimate the cost)")


@dataclasses.dataclass
class RetryPolicy:
  max_attempts: int = 6
  backoff_base: float = 1.0  # seconds before the first retry (doubling, with jitter)
  backoff_max: float = 60.0
  max_retry_after: float = 600.0  # a server's retry-after is honoured up to this
  timeout: float = 120.0  # per HTTP request

  def backoff(self, attempt: int) -> float:
    return min(self.backoff_max, self.backoff_base * 2.0 ** attempt) * random.uniform(0.5, 1.0)

  def delay(self, attempt: int, headers=None) -> float:
    """retry-after-ms / retry-after (seconds) when the server sends one, else the backoff."""
    if headers is not None:
      for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
          continue
        try:
          seconds = float(value) * scale
        except ValueError:
          continue
        if seconds >= 0:
          return min(seconds, self.max_retry_after)
    return self.backoff(attempt)


@dataclasses.dataclass
class Stats:
  requests_sent: int = 0  # messages.create attempts (retried ones included), or requests in batches
  responses: int = 0  # answers received and stored (what is billed)
  retries: int = 0
  rate_limited: int = 0
  server_errors: int = 0
  timeouts: int = 0
  connection_errors: int = 0
  input_tokens: int = 0
  output_tokens: int = 0
  batches_submitted: int = 0
  batch_ids: list = dataclasses.field(default_factory=list)


def message_text(message) -> str:
  """The text of a Message (SDK object or plain dict): its text blocks joined."""
  content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
  parts = []
  for block in content or []:
    kind = block.get("type") if isinstance(block, dict) else getattr(block, "type", None)
    text = block.get("text") if isinstance(block, dict) else getattr(block, "text", None)
    if kind == "text" and isinstance(text, str):
      parts.append(text)
  return "".join(parts)


def _usage(message) -> tuple[int, int]:
  usage = getattr(message, "usage", None)
  if usage is None:
    return 0, 0
  return int(getattr(usage, "input_tokens", 0) or 0), int(getattr(usage, "output_tokens", 0) or 0)


def _client(policy: RetryPolicy):
  import anthropic
  import httpx2
  # The SDK reads the key and ANTHROPIC_BASE_URL from the environment; its retries are ours (max 0).
  return anthropic.AsyncAnthropic(max_retries=0,
                                  timeout=httpx2.Timeout(policy.timeout,
                                                         connect=min(policy.timeout, 10.0)))


def _status_outcome(e, model: str) -> tuple[str, bool]:
  """(failure reason, retryable) of an APIStatusError; raises FatalError for hopeless statuses."""
  status = int(e.status_code)
  if status in (401, 403):
    raise FatalError(f"the API refused the request (HTTP {status}, {e.type or 'error'}): check "
                     f"{API_KEY_ENV} and its permissions")
  if status == 404:
    raise FatalError(f"HTTP 404 ({redact(e.api_message or 'not found')}): is the model {model!r} "
                     "right, and ANTHROPIC_BASE_URL (if set) an Anthropic API?")
  if status == 429:
    return "rate_limited", True
  if status == 529:
    return "overloaded", True
  if status in (408, 409) or status >= 500:
    return "server_error", True
  return f"http_{status}", False


class _Gate:
  """A shared pause: after a 429 every worker waits until the server's retry-after has passed."""

  def __init__(self):
    self.until = 0.0

  def pause(self, seconds: float) -> None:
    self.until = max(self.until, time.monotonic() + seconds)

  async def wait(self) -> None:
    while (left := self.until - time.monotonic()) > 0:
      await asyncio.sleep(left)


async def _with_retries(call, policy: RetryPolicy, stats: Stats, gate: _Gate, model: str,
                        count_sent: bool = False):
  """Awaits `call()` with the retry policy; returns its value or a Failure (FatalError propagates)."""
  import anthropic
  last = Failure("not_sent")
  for attempt in range(max(1, policy.max_attempts)):
    await gate.wait()
    if count_sent:
      stats.requests_sent += 1
    headers = None
    try:
      return await call()
    except anthropic.APIStatusError as e:
      reason, retryable = _status_outcome(e, model)
      detail = f"HTTP {e.status_code}: {redact(e.api_message or '')}"[:300]
      if not retryable:
        return Failure(reason, detail)
      headers = e.response.headers
      if reason == "rate_limited":
        stats.rate_limited += 1
      else:
        stats.server_errors += 1
      last = Failure(reason, detail)
    except anthropic.APITimeoutError:
      stats.timeouts += 1
      last = Failure("timeout", f"no answer within {policy.timeout:g} s")
    except anthropic.APIConnectionError as e:
      stats.connection_errors += 1
      last = Failure("connection_error", redact(e)[:300])
    if attempt + 1 >= policy.max_attempts:
      break
    delay = policy.delay(attempt, headers)
    if last.reason == "rate_limited":
      gate.pause(delay)
    stats.retries += 1
    await asyncio.sleep(delay)
  return last


class AnthropicBackend:
  """The Messages API, `concurrency` requests at a time."""

  name = "anthropic"
  uses_cache = True

  def __init__(self, model: str, cache: ResponseCache, *, concurrency: int = 8,
               policy: RetryPolicy | None = None):
    if concurrency < 1:
      raise ValueError(f"concurrency must be positive, got {concurrency}")
    self.model, self.cache, self.concurrency = model, cache, int(concurrency)
    self.policy = policy or RetryPolicy()
    self.stats = Stats()

  @property
  def source(self) -> str:
    return f"anthropic:{self.model}"

  def complete(self, requests: Sequence[LLMRequest], *, stage: str = "initial",
               owners: dict | None = None, on_done: OnDone | None = None) -> dict[str, Outcome]:
    del stage, owners  # every request is answered the same way
    if not requests:
      return {}
    return asyncio.run(self._complete(list(requests), on_done or (lambda key: None)))

  async def _complete(self, requests: list[LLMRequest], on_done: OnDone) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    pending = iter(requests)
    gate = _Gate()
    async with _client(self.policy) as client:

      async def worker():
        for req in pending:  # workers share the iterator: each request is taken once
          results[req.key] = await self._one(client, req, gate)
          on_done(req.key)

      try:
        async with asyncio.TaskGroup() as tg:
          for _ in range(min(self.concurrency, len(requests))):
            tg.create_task(worker())
      except BaseExceptionGroup as group:  # one worker failed and the others were cancelled
        fatal = [e for e in group.exceptions if isinstance(e, FatalError)]
        raise (fatal or list(group.exceptions))[0] from None
    return results

  async def _one(self, client, req: LLMRequest, gate: _Gate) -> Outcome:
    message = await _with_retries(lambda: client.messages.create(**req.params()), self.policy,
                                  self.stats, gate, self.model, count_sent=True)
    if isinstance(message, Failure):
      return message
    tokens_in, tokens_out = _usage(message)
    self.stats.responses += 1
    self.stats.input_tokens += tokens_in
    self.stats.output_tokens += tokens_out
    # Stored before anyone uses it: a crash after this line loses nothing that was paid for.
    return self.cache.put_answer(req, message_text(message), stop_reason=message.stop_reason,
                                 input_tokens=tokens_in, output_tokens=tokens_out,
                                 response_id=message.id, backend=self.name)


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
    gate = _Gate()
    in_open = {k for b in self.state.open() for k in b["keys"]}
    to_submit = [r for r in requests if r.key not in in_open and self.cache.get(r.key) is None]
    async with _client(self.policy) as client:
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
    import anthropic
    policy = self.policy
    for attempt in range(max(1, policy.max_attempts)):
      await gate.wait()
      try:
        return await client.messages.batches.create(requests=body)
      except anthropic.APIStatusError as e:
        reason, retryable = _status_outcome(e, self.model)
        if not retryable or attempt + 1 >= policy.max_attempts:
          return Failure(f"batch_submit_{reason}", f"HTTP {e.status_code}: {redact(e.api_message or '')}")
        self.stats.retries += 1
        await asyncio.sleep(policy.delay(attempt, e.response.headers))
      except anthropic.APIConnectionError as e:
        return Failure("batch_submit_failed",
                       f"{type(e).__name__}: the batch may exist; check the console before rerunning")
    return Failure("batch_submit_failed", "no attempt made")

  async def _wait(self, client, batch_id: str, gate: _Gate) -> None:
    start = time.monotonic()
    while True:
      batch = await _with_retries(lambda: client.messages.batches.retrieve(batch_id), self.policy,
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

  async def _fetch(self, client, entry: dict, by_key: dict, failures: dict, gate: _Gate,
                   on_done: OnDone) -> None:
    async def read_all():
      rows = []
      async for row in await client.messages.batches.results(entry["id"]):
        rows.append(row)
      return rows

    rows = await _with_retries(read_all, self.policy, self.stats, gate, self.model)
    if isinstance(rows, Failure):
      raise BatchPending(f"could not fetch the results of batch {entry['id']} ({rows.reason}); rerun "
                         "the same command to fetch them")
    for row in rows:
      key, result = row.custom_id, row.result
      if result.type == "succeeded":
        message = result.message
        tokens_in, tokens_out = _usage(message)
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


def _record_text(rec: dict) -> tuple[str | None, str]:
  """(answer text or None, failure reason) of one replay line."""
  if isinstance(rec.get("text"), str):
    return rec["text"], ""
  result = rec.get("result")
  if isinstance(result, dict):
    if result.get("type") == "succeeded" and isinstance(result.get("message"), dict):
      return message_text(result["message"]), ""
    return None, f"batch_{result.get('type', 'unknown')}"
  if isinstance(rec.get("content"), list):
    return message_text(rec), ""
  return None, "replay_record_without_text"


class ReplayBackend:
  """Answers from an earlier run's cache directory or a JSONL file (see the module docstring)."""

  name = "replay"
  uses_cache = False
  source = "replay"

  def __init__(self, path: str | os.PathLike):
    path = Path(path)
    self.stats = Stats()
    self.cache: ResponseCache | None = None
    self.by_key: dict[str, tuple[str | None, str]] = {}
    self.by_user: dict[tuple[str | None, str], tuple[str | None, str]] = {}
    if path.is_dir():
      self.cache = ResponseCache(path / "cache" if (path / "cache").is_dir() else path)
      return
    if not path.exists():
      raise DataError("no such replay file or directory", path)
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          rec = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f"invalid JSON: {e.msg}", path, lineno) from None
        if not isinstance(rec, dict):
          raise DataError("a replay line must be a JSON object", path, lineno)
        answer = _record_text(rec)
        if isinstance(rec.get("custom_id"), str):
          self.by_key[rec["custom_id"]] = answer
        elif isinstance(rec.get("user"), (str, int)):
          pool = rec.get("pool")
          self.by_user[(None if pool is None else str(pool), str(rec["user"]))] = answer
        else:
          raise DataError('a replay line needs "custom_id" or "user"', path, lineno)

  def _lookup(self, req: LLMRequest, stage: str, owners: list) -> Outcome:
    if self.cache is not None:
      hit = self.cache.get(req.key)
      return hit if hit is not None else Failure("not_in_replay", "no cached answer for this prompt")
    answer = self.by_key.get(req.key)
    if answer is None and stage == "initial":
      for pool, user in owners:
        answer = self.by_user.get((pool, user)) or self.by_user.get((None, user))
        if answer is not None:
          break
    if answer is None:
      return Failure("not_in_replay", "no line for this request")
    text, reason = answer
    if text is None:
      return Failure(reason, "the replayed request had no answer")
    return CachedResponse(key=req.key, text=text, stop_reason=None, input_tokens=0, output_tokens=0,
                          backend=self.name)

  def complete(self, requests: Sequence[LLMRequest], *, stage: str = "initial",
               owners: dict | None = None, on_done: OnDone | None = None) -> dict[str, Outcome]:
    out = {}
    for req in requests:
      out[req.key] = self._lookup(req, stage, (owners or {}).get(req.key, []))
      if on_done is not None:
        on_done(req.key)
    return out
