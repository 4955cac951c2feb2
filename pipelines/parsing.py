"""Reads an LLM answer into (summary, items), tolerantly, and says why when it cannot.

The expected answer is one JSON object {"summary": str, "items": [str, ...]}. Accepted around and inside
it: prose before or after the object, a ```json fence, trailing commas, and output cut off mid-way (the
complete items before the cut are kept, and the answer is marked truncated). Validation: the summary must
be a string (it may be empty); items must be a list whose string entries (stripped, de-duplicated
case-insensitively, first kept) are not all empty; non-string entries are dropped and noted.

`parse_answer` never raises on bad text: it returns a `ParseFailure` whose `reason` is one of
FAILURE_REASONS, which the pipeline counts and puts in the repair instruction.
"""

from __future__ import annotations

import dataclasses
import json
import re

FAILURE_REASONS = ("empty_response", "no_json_object", "invalid_json", "not_an_object", "bad_summary",
                   "bad_items", "empty_items")

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_MAX_STARTS = 8  # '{' positions tried as the start of the object
_MAX_CUTS = 64  # cut points tried when recovering a truncated object


@dataclasses.dataclass(frozen=True)
class ParsedAnswer:
  summary: str
  items: tuple[str, ...]
  truncated: bool = False  # recovered from output cut off before the object closed
  notes: tuple[str, ...] = ()  # what the tolerant reading had to fix


@dataclasses.dataclass(frozen=True)
class ParseFailure:
  reason: str  # one of FAILURE_REASONS
  detail: str = ""


def _strip_trailing_commas(s: str) -> str:
  """Removes commas directly before '}' or ']' (outside strings)."""
  out, in_str, esc = [], False, False
  i, n = 0, len(s)
  while i < n:
    c = s[i]
    if in_str:
      out.append(c)
      if esc:
        esc = False
      elif c == "\\":
        esc = True
      elif c == '"':
        in_str = False
    elif c == '"':
      in_str = True
      out.append(c)
    elif c == ",":
      j = i + 1
      while j < n and s[j] in " \t\r\n":
        j += 1
      if j < n and s[j] in "}]":
        i += 1
        continue  # drop the comma, keep the whitespace after it
      out.append(c)
    else:
      out.append(c)
    i += 1
  return "".join(out)


def _loads(s: str):
  """json.loads, then once more without trailing commas. Returns (value, fixed_commas) or raises."""
  try:
    return json.loads(s), False
  except json.JSONDecodeError:
    return json.loads(_strip_trailing_commas(s)), True


def _scan(text: str, start: int):
  """From the '{' at `start`: (end index of the matching '}' or None, cut points for recovery).

  A cut point is (position just after a complete string or a closed container, the closers that
  would then close every open container).
  """
  stack: list[str] = []
  in_str = esc = False
  cuts: list[tuple[int, str]] = []
  for i in range(start, len(text)):
    c = text[i]
    if in_str:
      if esc:
        esc = False
      elif c == "\\":
        esc = True
      elif c == '"':
        in_str = False
        cuts.append((i + 1, "".join(reversed(stack))))
      continue
    if c == '"':
      in_str = True
    elif c in "{[":
      stack.append("}" if c == "{" else "]")
    elif c in "}]":
      if not stack or stack[-1] != c:
        return None, cuts  # mismatched: not the object we are looking for
      stack.pop()
      if not stack:
        return i, cuts
      cuts.append((i + 1, "".join(reversed(stack))))
  return None, cuts


def _candidates(text: str):
  """Texts to look for the object in: fenced blocks first, then the whole answer."""
  fenced = [m.group(1) for m in _FENCE.finditer(text) if "{" in m.group(1)]
  return fenced + [text]


def _find_object(text: str):
  """(value, notes, truncated) of the first JSON object found, or a ParseFailure."""
  saw_brace = False
  last_error = ""
  for cand in _candidates(text):
    starts = [m.start() for m in re.finditer(r"\{", cand)][:_MAX_STARTS]
    recover_from = None
    for start in starts:
      saw_brace = True
      end, cuts = _scan(cand, start)
      if end is None:
        if recover_from is None:
          recover_from = (start, cuts)
        continue
      try:
        value, fixed = _loads(cand[start:end + 1])
      except json.JSONDecodeError as e:
        last_error = f"{e.msg} at char {e.pos}"
        continue
      return value, (("trailing_commas",) if fixed else ()), False
    if recover_from is not None:
      start, cuts = recover_from
      for pos, closers in reversed(cuts[-_MAX_CUTS:]):
        try:
          value, _ = _loads(cand[start:pos] + closers)
        except json.JSONDecodeError:
          continue
        if isinstance(value, dict):
          return value, ("truncated",), True
  if not saw_brace:
    return ParseFailure("no_json_object", "no '{' in the answer")
  return ParseFailure("invalid_json", last_error or "the object never closes and nothing was recoverable")


def parse_answer(text: str | None, max_items: int | None = None) -> ParsedAnswer | ParseFailure:
  """The (summary, items) of an answer, or why it is unusable."""
  if text is None or not str(text).strip():
    return ParseFailure("empty_response", "the answer has no text")
  found = _find_object(str(text))
  if isinstance(found, ParseFailure):
    return found
  value, notes, truncated = found
  if not isinstance(value, dict):
    return ParseFailure("not_an_object", f"found {type(value).__name__}")
  notes = list(notes)
  summary = value.get("summary", None)
  if not isinstance(summary, str):
    return ParseFailure("bad_summary", f"summary is {type(summary).__name__}, expected a string")
  items = value.get("items", None)
  if not isinstance(items, list):
    return ParseFailure("bad_items", f"items is {type(items).__name__}, expected a list of strings")
  kept, seen = [], set()
  non_str = 0
  for item in items:
    if not isinstance(item, str):
      non_str += 1
      continue
    s = " ".join(item.split())
    if s and s.casefold() not in seen:
      seen.add(s.casefold())
      kept.append(s)
  if non_str:
    notes.append(f"dropped_{non_str}_non_string_items")
  if not kept:
    return ParseFailure("empty_items", "no non-empty string in items")
  if max_items is not None and max_items > 0 and len(kept) > max_items:
    kept = kept[:max_items]
    notes.append("items_capped")
  return ParsedAnswer(summary=" ".join(summary.split()), items=tuple(kept), truncated=truncated,
                      notes=tuple(notes))
