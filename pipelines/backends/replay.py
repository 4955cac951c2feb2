"""replay: answers from an earlier run, never an API call.

PATH is either a cache directory (an earlier run's `--out/cache`, or that `--out` itself), looked up by
request key (same model, prompt version and prompt), or a JSONL file with one object per line:
  {"custom_id": "<request key>", "text": "..."}        e.g. exported from a cache or a batch
  {"user": "<user id>", "pool": "<pool>", "text": "..."}   "pool" optional; by user id
  {"custom_id": ..., "result": {"type": "succeeded", "message": {"content": [{"type": "text",
   "text": "..."}]}}}                                 a Message Batches results file, as downloaded
A line may give the answer as "text", as a Message ("content" blocks) or as a batch "result". User-id
lines answer only first requests (not the repair follow-up, which has no line of its own).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from lgcd_jax.data.errors import DataError
from pipelines.backends.base import Failure, OnDone, Outcome, Stats
from pipelines.backends.sdk import message_text
from pipelines.cache import CachedResponse, ResponseCache
from pipelines.prompts import LLMRequest


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
