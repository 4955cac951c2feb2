"""Where LLM answers come from: the Messages API, the Message Batches API, or a replay file.

Every backend answers `complete(requests, stage=..., owners=..., on_done=...)` with {request key: a
`cache.CachedResponse` or a `Failure`}. The two API backends store each answer in the response cache
before returning it (the pipeline has already served cached keys, so they only see misses); `on_done(key)`
is called as each request finishes (the progress bar).

  base.py       what every backend shares: Failure, the errors that stop a run, the counters (Stats)
  sdk.py        the official SDK's client; the API key (read from the environment, redacted from output)
  retry.py      the retry policy: which answers are retried, backoff, retry-after, the shared 429 pause
  messages.py   anthropic: the Messages API, `concurrency` requests at a time
  batches.py    anthropic_batch: the Message Batches API, batch ids persisted before polling
  replay.py     replay: answers from an earlier run's cache or a JSONL file, never an API call
"""

from pipelines.backends.base import BatchPending, FatalError, Failure, Outcome, Stats
from pipelines.backends.batches import AnthropicBatchBackend, BatchState
from pipelines.backends.messages import AnthropicBackend
from pipelines.backends.replay import ReplayBackend
from pipelines.backends.retry import RetryPolicy
from pipelines.backends.sdk import API_KEY_ENV, message_text, redact, require_api_key

__all__ = ["API_KEY_ENV", "AnthropicBackend", "AnthropicBatchBackend", "BatchPending", "BatchState",
           "FatalError", "Failure", "Outcome", "ReplayBackend", "RetryPolicy", "Stats", "message_text",
           "redact", "require_api_key"]
