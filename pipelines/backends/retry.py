"""The retry policy of the API backends: up to `max_attempts` attempts per request on 429 (honouring
retry-after / retry-after-ms, and pausing every worker while rate limited), 408/409, 5xx (529 overloaded
included), timeouts and connection errors, with exponential backoff and jitter in between. 400/413/422
fail the request; 401/403/404 stop the run (a bad key, no permission or an unknown model stays bad).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

from pipelines.backends.base import FatalError, Failure, Stats
from pipelines.backends.sdk import API_KEY_ENV, redact


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


def status_outcome(e, model: str) -> tuple[str, bool]:
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


class Gate:
  """A shared pause: after a 429 every worker waits until the server's retry-after has passed."""

  def __init__(self):
    self.until = 0.0

  def pause(self, seconds: float) -> None:
    self.until = max(self.until, time.monotonic() + seconds)

  async def wait(self) -> None:
    while (left := self.until - time.monotonic()) > 0:
      await asyncio.sleep(left)


async def with_retries(call, policy: RetryPolicy, stats: Stats, gate: Gate, model: str,
                       count_sent: bool = False):
  """Awaits `call()` with the retry policy; returns its value or a Failure (FatalError propagates)."""
  import anthropic  # pylint: disable=g-import-not-at-top  (only an API backend gets here: see sdk.py)
  last = Failure("not_sent")
  for attempt in range(max(1, policy.max_attempts)):
    await gate.wait()
    if count_sent:
      stats.requests_sent += 1
    headers = None
    try:
      return await call()
    except anthropic.APIStatusError as e:
      reason, retryable = status_outcome(e, model)
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
