"""What every backend shares: the outcome of a request, the errors that stop a run, the counters."""

from __future__ import annotations

import dataclasses
from typing import Callable

from pipelines.cache import CachedResponse


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
