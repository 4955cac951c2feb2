"""The official Anthropic SDK as the API backends use it, and the API key.

The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment; nothing here ever touches
the key except to check that it is set and to redact it from anything logged or written. The SDK
(about two seconds to import) is imported where a client is made, so the replay and bridge backends
and `--help` never load it.
"""

from __future__ import annotations

import os

from pipelines.backends.base import FatalError

API_KEY_ENV = "ANTHROPIC_API_KEY"


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


def token_usage(message) -> tuple[int, int]:
  """(input tokens, output tokens) of a Message; zeros when it reports none."""
  usage = getattr(message, "usage", None)
  if usage is None:
    return 0, 0
  return int(getattr(usage, "input_tokens", 0) or 0), int(getattr(usage, "output_tokens", 0) or 0)


def client(timeout: float):
  """An AsyncAnthropic client with a per-request `timeout` (seconds) and the SDK's own retries off."""
  import anthropic  # pylint: disable=g-import-not-at-top  (see the module docstring)
  import httpx2  # pylint: disable=g-import-not-at-top
  # The SDK reads the key and ANTHROPIC_BASE_URL from the environment; its retries are ours (max 0).
  return anthropic.AsyncAnthropic(max_retries=0,
                                  timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)))
