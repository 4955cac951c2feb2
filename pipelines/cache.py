"""The response cache: every LLM answer is on disk before anything uses it.

A request is identified by `request_key(model, prompt_version, system, messages, max_tokens)`: the
SHA-256 of the model, the prompt version (`prompts.PROMPT_VERSION`) and the prompt (system text,
messages, max_tokens), JSON-encoded with sorted keys so that the same prompt always gives the same key.
One file per key:

  <cache_dir>/<key[:2]>/<key>.json   {"key", "model", "prompt_version", "system_sha256", "messages",
                                      "max_tokens", "text", "stop_reason", "input_tokens",
                                      "output_tokens", "response_id", "backend", "stored_at"}

Each file is written atomically (temporary file, fsync, rename), so a crash or Ctrl-C leaves either the
whole answer or nothing: a rerun sends no request whose answer is stored. The record holds the request's
messages (the user's titles, which are data) but never a header, so the API key cannot end up here. The
system prompt is stored by hash only (it is shared by most users and would multiply the cache's size).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

from lgcd_jax.data import atomic


@dataclasses.dataclass(frozen=True)
class CachedResponse:
  """One stored answer."""

  key: str
  text: str
  stop_reason: str | None
  input_tokens: int
  output_tokens: int
  backend: str = ""


def request_key(model: str, prompt_version: str, system: str, messages: Sequence[dict],
                max_tokens: int) -> str:
  """sha256 hex of (model, prompt version, prompt): the cache key and the batch custom_id."""
  blob = json.dumps({"model": model, "prompt_version": prompt_version, "system": system,
                     "messages": list(messages), "max_tokens": int(max_tokens)},
                    sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
  """A directory of stored responses, one atomically written JSON file per request key."""

  def __init__(self, cache_dir: str | os.PathLike):
    self.dir = Path(cache_dir)

  def path(self, key: str) -> Path:
    if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
      raise ValueError(f"not a cache key: {key!r}")
    return self.dir / key[:2] / f"{key}.json"

  def get(self, key: str) -> CachedResponse | None:
    """The stored answer, or None (also for an unreadable file, which is then simply re-requested)."""
    path = self.path(key)
    try:
      rec = json.loads(path.read_text(encoding="utf-8"))
      return CachedResponse(key=key, text=str(rec["text"]), stop_reason=rec.get("stop_reason"),
                            input_tokens=int(rec.get("input_tokens") or 0),
                            output_tokens=int(rec.get("output_tokens") or 0),
                            backend=str(rec.get("backend", "")))
    except (OSError, ValueError, KeyError, TypeError):
      return None

  def __contains__(self, key: str) -> bool:
    return self.get(key) is not None

  def put(self, key: str, text: str, *, model: str, prompt_version: str, stop_reason: str | None,
          input_tokens: int, output_tokens: int, system: str | None = None,
          messages: Sequence[dict] | None = None, max_tokens: int | None = None,
          response_id: str | None = None, backend: str = "") -> CachedResponse:
    """Stores one answer durably (fsync + rename), then returns it."""
    rec = {
        "key": key,
        "model": model,
        "prompt_version": prompt_version,
        "system_sha256": (None if system is None
                          else hashlib.sha256(system.encode("utf-8")).hexdigest()),
        "messages": None if messages is None else list(messages),
        "max_tokens": max_tokens,
        "text": text,
        "stop_reason": stop_reason,
        "input_tokens": int(input_tokens),
        "output_tokens": int(output_tokens),
        "response_id": response_id,
        "backend": backend,
        "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.atomic_write_json(self.path(key), rec, indent=None)
    return CachedResponse(key=key, text=text, stop_reason=stop_reason, input_tokens=int(input_tokens),
                          output_tokens=int(output_tokens), backend=backend)

  def put_answer(self, request, text: str, **kwargs) -> CachedResponse:
    """`put` for the answer to `request` (a `prompts.LLMRequest`), recording its prompt."""
    return self.put(request.key, text, model=request.model, prompt_version=request.prompt_version,
                    system=request.system, messages=request.messages, max_tokens=request.max_tokens,
                    **kwargs)

  def keys(self) -> list[str]:
    """Every stored key (for tests and tools)."""
    if not self.dir.exists():
      return []
    return sorted(p.stem for p in self.dir.glob("??/*.json"))
