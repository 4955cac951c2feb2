"""anthropic: the Messages API through `AsyncAnthropic` (sdk.py), at most `concurrency` requests in flight
(that many workers share one request iterator). The SDK's own retries are off (max_retries=0) so that one
bounded loop owns them (retry.py).
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from pipelines.backends.base import FatalError, Failure, OnDone, Outcome, Stats
from pipelines.backends.retry import Gate, RetryPolicy, with_retries
from pipelines.backends.sdk import client as make_client
from pipelines.backends.sdk import message_text, token_usage
from pipelines.cache import ResponseCache
from pipelines.prompts import LLMRequest


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
    gate = Gate()
    async with make_client(self.policy.timeout) as client:

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

  async def _one(self, client, req: LLMRequest, gate: Gate) -> Outcome:
    message = await with_retries(lambda: client.messages.create(**req.params()), self.policy,
                                 self.stats, gate, self.model, count_sent=True)
    if isinstance(message, Failure):
      return message
    tokens_in, tokens_out = token_usage(message)
    self.stats.responses += 1
    self.stats.input_tokens += tokens_in
    self.stats.output_tokens += tokens_out
    # Stored before anyone uses it: a crash after this line loses nothing that was paid for.
    return self.cache.put_answer(req, message_text(message), stop_reason=message.stop_reason,
                                 input_tokens=tokens_in, output_tokens=tokens_out,
                                 response_id=message.id, backend=self.name)
