"""Raw Amazon review dumps (2014, 2018 or 2023 layout) -> `RawDataset`.

Domain A is built from the source review and metadata files, domain B from the target ones. Users are
matched across the domains by their reviewer id, so both domains must come from the same dump family:
2014/2018 `reviewerID` and 2023 `user_id` are different id systems and never overlap.

Each file may be plain text or gzip (told apart by its magic bytes, not its name). Its layout is
detected from its first non-empty line:

  2014  reviews: JSON with `reviewerID`, `asin`, `unixReviewTime` (seconds).
        metadata: Python dict literals (single quotes), read with `ast.literal_eval` (never `eval`);
        a line that is valid JSON is accepted too.
  2018  reviews: as 2014. metadata: JSON with `asin`, `title`.
  2023  reviews: JSON with `user_id`, `parent_asin` (the item id), `timestamp` (milliseconds).
        metadata: JSON with `parent_asin`, `title`.

(2014 and 2018 review lines are read identically; the label only records whether the first line had the
2014 `helpful` field.)

Titles are HTML-unescaped (the dumps carry raw entities such as `&amp;`).
Per domain: parse -> drop repeated (user, item) pairs, keeping the earliest -> drop interactions with
items that have no title in the metadata (a title is required downstream) -> optional k-core -> index
the remaining items 0-based in sorted order of their original id. Then the overlap users (items in both
domains) are found, a seeded set of them is held out for evaluation, and the rest form the training
pools. Bad input raises `DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

import array
import ast
import gzip
import html
import json
import math
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import DIRECTIONS, DOMAINS, SPLITS, RawDataset, direction_domains

_GZIP_MAGIC = b"\x1f\x8b"
# layout -> (user key, item key, time key, milliseconds per unit of the time field)
_REVIEW_KEYS = {
    "2014": ("reviewerID", "asin", "unixReviewTime", 1000),
    "2018": ("reviewerID", "asin", "unixReviewTime", 1000),
    "2023": ("user_id", "parent_asin", "timestamp", 1),
}
_META_ITEM_KEY = {"2014": "asin", "2018": "asin", "2023": "parent_asin"}
_INT64 = 2**63
_ROLES = ("source_reviews", "source_meta", "target_reviews", "target_meta")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, stripped line) of a plain or gzip UTF-8 file, blank lines skipped."""
  try:
    with open(path, "rb") as f:
      magic = f.read(2)
  except OSError as e:
    raise DataError(f"cannot open file ({e.strerror or e})", path) from None
  opener = gzip.open if magic == _GZIP_MAGIC else open
  lineno = 0
  try:
    with opener(path, "rb") as f:
      # Binary lines decoded one by one: a decoding error then points at its own line, not at the
      # start of whatever chunk a text wrapper happened to be decoding.
      for lineno, raw in enumerate(f, 1):
        raw = raw.strip()
        if not raw:
          continue
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path, lineno) from None
        yield lineno, line
  except (OSError, EOFError, zlib.error) as e:
    # A corrupt or truncated gzip stream fails while reading the line after the last good one.
    raise DataError(f"cannot read file ({type(e).__name__}: {e})", path, lineno + 1) from None


def _parse_json(line: str, path: Path, lineno: int) -> dict:
  try:
    rec = json.loads(line)
  except json.JSONDecodeError as e:
    # e.msg, not str(e): the latter says "line 1" (of the one-line string), which misleads.
    raise DataError(f"malformed line: not valid JSON ({e.msg} at column {e.colno})", path,
                    lineno) from None
  except (ValueError, RecursionError) as e:
    raise DataError(f"malformed line: not valid JSON ({type(e).__name__})", path, lineno) from None
  if not isinstance(rec, dict):
    raise DataError(f"malformed line: expected a JSON object, got {type(rec).__name__}", path, lineno)
  return rec


def _parse_literal(line: str, path: Path, lineno: int) -> dict:
  """A 2014 metadata line: a Python dict literal. `ast.literal_eval` only accepts literals, so code
  such as `__import__('os')...` is rejected, never run. JSON (true/false/null) is the fallback."""
  try:
    rec = ast.literal_eval(line)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    try:
      rec = json.loads(line)
    except (ValueError, RecursionError):
      raise DataError("malformed line: neither a Python dict literal nor JSON", path, lineno) from None
  if not isinstance(rec, dict):
    raise DataError(f"malformed line: expected a dict, got {type(rec).__name__}", path, lineno)
  return rec


def _str_field(rec: dict, key: str, path: Path, lineno: int) -> str:
  try:
    value = rec[key]
  except KeyError:
    raise DataError(f"missing required field {key!r}", path, lineno) from None
  if not isinstance(value, str):
    raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path, lineno)
  if not value:
    raise DataError(f"field {key!r} is empty", path, lineno)
  return value


def _time_field(rec: dict, key: str, scale: int, path: Path, lineno: int) -> int:
  """The review time in milliseconds."""
  try:
    value = rec[key]
  except KeyError:
    raise DataError(f"missing required field {key!r}", path, lineno) from None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise DataError(f"field {key!r} must be a number, got {type(value).__name__}", path, lineno)
  if isinstance(value, float) and not math.isfinite(value):
    raise DataError(f"field {key!r} is not finite ({value})", path, lineno)
  ms = int(value * scale)
  if not -_INT64 <= ms < _INT64:
    raise DataError(f"field {key!r} is out of range ({value})", path, lineno)
  return ms


class _Users:
  """Reviewer ids interned to int codes, shared by both domains so overlap is a code intersection."""

  def __init__(self):
    self.code: dict[str, int] = {}
    self.ids: list[str] = []

  def intern(self, user: str) -> int:
    c = self.code.get(user)
    if c is None:
      c = self.code[user] = len(self.ids)
      self.ids.append(user)
    return c

  def sort_codes(self, codes) -> list[int]:
    return sorted((int(c) for c in codes), key=self.ids.__getitem__)


class _Domain:
  """One domain's raw interactions as compact columns (~16 bytes a review), not a dict per record."""

  def __init__(self):
    self.users = array.array("i")
    self.items = array.array("i")
    self.times = array.array("q")
    self.item_code: dict[str, int] = {}
    self.item_ids: list[str] = []
    self.titles: list[str | None] = []

  def add(self, user: int, item: str, ms: int) -> None:
    c = self.item_code.get(item)
    if c is None:
      c = self.item_code[item] = len(self.item_ids)
      self.item_ids.append(item)
      self.titles.append(None)
    self.users.append(user)
    self.items.append(c)
    self.times.append(ms)


def _detect_review_layout(rec: dict, path: Path, lineno: int) -> str:
  if "user_id" in rec:
    return "2023"
  if "reviewerID" in rec:
    return "2014" if "helpful" in rec else "2018"
  raise DataError("unknown layout: a review line needs reviewerID/asin/unixReviewTime (2014, 2018) or "
                  f"user_id/parent_asin/timestamp (2023); found keys {sorted(rec)[:12]}", path, lineno)


def _read_reviews(path: Path, dom: _Domain, users: _Users) -> tuple[str, int]:
  """Appends every review of `path` to `dom`; returns (layout, number of records)."""
  layout = None
  records = 0
  for lineno, line in _lines(path):
    rec = _parse_json(line, path, lineno)
    if layout is None:
      layout = _detect_review_layout(rec, path, lineno)
      user_key, item_key, time_key, scale = _REVIEW_KEYS[layout]
    user = _str_field(rec, user_key, path, lineno)
    item = _str_field(rec, item_key, path, lineno)
    ms = _time_field(rec, time_key, scale, path, lineno)
    dom.add(users.intern(user), item, ms)
    records += 1
  if layout is None:
    raise DataError("no records: the file is empty", path)
  return layout, records


def _detect_meta_layout(line: str, path: Path, lineno: int) -> tuple[str, dict]:
  try:
    rec = json.loads(line)
    layout = None
  except (ValueError, RecursionError):
    rec = _parse_literal(line, path, lineno)
    layout = "2014"  # only the 2014 metadata is written as Python literals
  if not isinstance(rec, dict):
    raise DataError(f"malformed line: expected a JSON object, got {type(rec).__name__}", path, lineno)
  if "reviewerID" in rec or "user_id" in rec:
    raise DataError("unknown layout: this looks like a review file, expected item metadata", path,
                    lineno)
  if layout is None:
    if "parent_asin" in rec:
      layout = "2023"
    elif "asin" in rec:
      layout = "2018"
  elif "asin" not in rec:
    layout = None
  if layout is None:
    raise DataError("unknown layout: a metadata line needs asin (2014, 2018) or parent_asin (2023); "
                    f"found keys {sorted(map(str, rec))[:12]}", path, lineno)
  return layout, rec


def _read_meta(path: Path, dom: _Domain, review_layout: str, review_path: Path) -> dict[str, Any]:
  """Fills `dom.titles` for reviewed items from `path`; returns this file's statistics."""
  layout = None
  records = without_title = unreviewed = 0
  for lineno, line in _lines(path):
    if layout is None:
      layout, rec = _detect_meta_layout(line, path, lineno)
      if (layout == "2023") != (review_layout == "2023"):
        raise DataError(f"metadata layout {layout} does not match the {review_layout} layout of "
                        f"{review_path.name}: 2023 items are keyed by parent_asin, older ones by asin",
                        path, lineno)
      item_key = _META_ITEM_KEY[layout]
      parse = _parse_literal if layout == "2014" else _parse_json
    else:
      rec = parse(line, path, lineno)
    records += 1
    item = _str_field(rec, item_key, path, lineno)
    title = rec.get("title")
    if title is not None and not isinstance(title, str):
      raise DataError(f"field 'title' must be a string, got {type(title).__name__}", path, lineno)
    # Amazon titles carry raw HTML entities (`&amp;`, `&#39;`): stored, embedded and prompted unescaped.
    title = html.unescape(title or "").strip()
    if not title:
      without_title += 1  # common in real dumps; the item is simply skipped
      continue
    code = dom.item_code.get(item)
    if code is None:
      unreviewed += 1  # titles of items nobody reviewed are not kept: saves memory on big dumps
    elif dom.titles[code] is None:  # a repeated line never replaces the first title
      dom.titles[code] = title
  if layout is None:
    raise DataError("no records: the file is empty", path)
  return {"layout": layout, "records": records, "without_title": without_title,
          "unreviewed": unreviewed}


def _clean(dom: _Domain, kcore: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
  """Dedupe, title filter, k-core; returns (user codes, item codes, times in ms) sorted by user, time,
  file order."""
  u = np.array(dom.users, dtype=np.int32)
  it = np.array(dom.items, dtype=np.int32)
  t = np.array(dom.times, dtype=np.int64)
  pos = np.arange(len(u), dtype=np.int64)
  stats = {"reviews": len(u)}

  # Dedupe: within each (user, item) group the first after sorting by (time, file order) survives.
  order = np.lexsort((pos, t, it, u))
  first = np.ones(len(order), dtype=bool)
  first[1:] = (u[order][1:] != u[order][:-1]) | (it[order][1:] != it[order][:-1])
  keep = np.sort(order[first])
  stats["duplicates_removed"] = len(u) - len(keep)
  u, it, t, pos = u[keep], it[keep], t[keep], pos[keep]

  has_title = np.fromiter((x is not None for x in dom.titles), dtype=bool, count=len(dom.titles))
  mask = has_title[it]
  stats["items_without_title"] = int((~has_title).sum())
  stats["interactions_dropped_no_title"] = int((~mask).sum())
  u, it, t, pos = u[mask], it[mask], t[mask], pos[mask]

  users_before, items_before, inter_before = len(np.unique(u)), len(np.unique(it)), len(u)
  rounds = 0
  if kcore > 0:
    # Remove every under-k user and item at once, recount, repeat: converges to the unique k-core.
    while len(u):
      user_count = np.bincount(u)
      item_count = np.bincount(it)
      mask = (user_count[u] >= kcore) & (item_count[it] >= kcore)
      if mask.all():
        break
      rounds += 1
      u, it, t, pos = u[mask], it[mask], t[mask], pos[mask]
  stats["kcore_rounds"] = rounds
  stats["kcore_users_removed"] = users_before - len(np.unique(u))
  stats["kcore_items_removed"] = items_before - len(np.unique(it))
  stats["kcore_interactions_removed"] = inter_before - len(u)

  order = np.lexsort((pos, t, u))
  return u[order], it[order], t[order], stats


class _Sequences:
  """A domain's per-user item-index sequences (and their times), looked up by user codes."""

  def __init__(self, u: np.ndarray, idx: np.ndarray, times: np.ndarray):
    self.codes, self.starts = np.unique(u, return_index=True)
    self.ends = np.append(self.starts[1:], len(u))
    self.idx = idx
    self.times = times

  def _rows(self, codes: list[int]) -> tuple[list[int], list[int]]:
    # One vectorised lookup: a searchsorted call per user costs a cast of the whole code array.
    rows = np.searchsorted(self.codes, np.asarray(codes, dtype=self.codes.dtype))
    return self.starts[rows].tolist(), self.ends[rows].tolist()

  def __call__(self, codes: list[int]) -> list[list[int]]:
    return [self.idx[s:e].tolist() for s, e in zip(*self._rows(codes))]

  def times_of(self, codes: list[int]) -> list[np.ndarray]:
    """Each user's item times (ms), in its sequence's order."""
    return [self.times[s:e] for s, e in zip(*self._rows(codes))]

  def last_times(self, codes: list[int]) -> list[int]:
    """The time (ms) of each user's last item: an eval user's label time."""
    return [int(self.times[e - 1]) for e in self._rows(codes)[1]]

  def until(self, codes: list[int], times: list[int]) -> list[list[int]]:
    """Each user's items with time <= its limit (the items up to that moment), in time order."""
    out = []
    for s, e, limit in zip(*self._rows(codes), times):
      stop = s + int(np.searchsorted(self.times[s:e], limit, side="right"))  # times sorted per user
      out.append(self.idx[s:stop].tolist())
    return out


def _default_eval_users(num_overlap: int) -> int:
  # 10% of the overlap users, but at least 4 so that each (direction, split) gets one.
  return min(num_overlap, max(int(0.1 * num_overlap + 0.5), 4))


def build_amazon(source_reviews: str | os.PathLike, source_meta: str | os.PathLike,
                 target_reviews: str | os.PathLike, target_meta: str | os.PathLike, *,
                 kcore: int = 0, eval_users: int | None = None, seed: int = 0,
                 progress: bool = False) -> tuple[RawDataset, dict[str, Any]]:
  """Parses raw Amazon dumps into a `RawDataset` (A = source files, B = target files).

  Args:
    source_reviews, source_meta, target_reviews, target_meta: review and metadata files, plain or gzip.
    kcore: if > 0, repeatedly drop users and items with fewer than `kcore` interactions within each
      domain (a user's count is their count in that domain) until stable; 0 keeps everything.
    eval_users: overlap users held out for evaluation, split half valid / half test (valid gets the odd
      one). Default: 10% of the overlap users, at least 4 (one per direction and split) or all of
      them if fewer. Each gets a direction; for A2B the label is their last B item and the input their
      A items up to the label's time, in time order (A items reviewed later are not shown; those at
      the label's very time are); the rest of their B history is dropped (B2A mirrors).
    seed: seeds the choice of held-out users and their directions.
    progress: print a line per file read to stderr.

  Returns:
    `(raw, stats)`. `stats` is JSON-serialisable: `layouts` and `records` per file (keys
    source_reviews, source_meta, target_reviews, target_meta), `meta_without_title` (metadata lines
    skipped for a missing/empty title) and `meta_unreviewed` per domain, `domains` (per domain:
    reviews, duplicates_removed, items_without_title, interactions_dropped_no_title, kcore_rounds,
    kcore_users_removed, kcore_items_removed, kcore_interactions_removed, items, interactions),
    `kcore`, `seed`, `num_users` (per pool plus overlap_total), `eval_users` per direction and split,
    `eval_hidden_interactions` (target items of held-out users dropped besides the label),
    `eval_hidden_later_source_items` (source items of held-out users after their label's time) and
    `eval_users_with_empty_source` per direction (held-out users with no source item up to the label;
    kept, as the LLMCDSR reader keeps them).

  Raises:
    DataError: bad input (naming the file and line), or nothing usable left (no items in a domain,
      no overlap users).
    ValueError: `kcore` < 0, or `eval_users` outside [0, number of overlap users].
  """
  if kcore < 0:
    raise ValueError(f"kcore must be >= 0, got {kcore}")
  paths = dict(zip(_ROLES, map(Path, (source_reviews, source_meta, target_reviews, target_meta))))
  users = _Users()
  domains = {d: _Domain() for d in DOMAINS}
  stats: dict[str, Any] = {"layouts": {}, "records": {}, "meta_without_title": {},
                           "meta_unreviewed": {}, "domains": {}, "kcore": kcore, "seed": seed}

  def report(role: str) -> None:
    if progress:
      print(f"amazon: read {paths[role]} ({stats['records'][role]} records, layout "
            f"{stats['layouts'][role]})", file=sys.stderr, flush=True)

  for d, side in zip(DOMAINS, ("source", "target")):
    rev_role, meta_role = f"{side}_reviews", f"{side}_meta"
    layout, records = _read_reviews(paths[rev_role], domains[d], users)
    stats["layouts"][rev_role], stats["records"][rev_role] = layout, records
    report(rev_role)
    meta = _read_meta(paths[meta_role], domains[d], layout, paths[rev_role])
    stats["layouts"][meta_role], stats["records"][meta_role] = meta["layout"], meta["records"]
    stats["meta_without_title"][d] = meta["without_title"]
    stats["meta_unreviewed"][d] = meta["unreviewed"]
    report(meta_role)

  # Clean each domain and index its items in sorted order of original id.
  seqs: dict[str, _Sequences] = {}
  items: dict[str, list[tuple[str, str]]] = {}
  for d, side in zip(DOMAINS, ("source", "target")):
    dom = domains[d]
    u, it, t, dstats = _clean(dom, kcore)
    if not len(u):
      raise DataError(f"no interactions left in domain {d} after dropping items without a title"
                      + (f" and the {kcore}-core" if kcore else ""), paths[f"{side}_reviews"])
    codes = np.unique(it)
    codes = np.array(sorted(codes.tolist(), key=dom.item_ids.__getitem__), dtype=np.int64)
    code_to_index = np.full(len(dom.item_ids), -1, dtype=np.int32)
    code_to_index[codes] = np.arange(len(codes), dtype=np.int32)
    items[d] = [(dom.item_ids[c], dom.titles[c]) for c in codes.tolist()]
    seqs[d] = _Sequences(u, code_to_index[it], t)
    dstats["items"], dstats["interactions"] = len(codes), len(u)
    stats["domains"][d] = dstats
    domains[d] = None  # free the raw columns before building the pools

  overlap = users.sort_codes(np.intersect1d(seqs["A"].codes, seqs["B"].codes))
  if not overlap:
    raise DataError(f"no user has items in both domains ({paths['source_reviews'].name} and "
                    f"{paths['target_reviews'].name}); both must come from the same dump family, "
                    "since 2014/2018 reviewerID and 2023 user_id differ")
  n_eval = _default_eval_users(len(overlap)) if eval_users is None else eval_users
  if not 0 <= n_eval <= len(overlap):
    raise ValueError(f"eval_users must be in [0, {len(overlap)}] (the overlap users), got {n_eval}")

  # Held-out users: a seeded permutation of the (id-sorted) overlap users; within each split the
  # directions alternate from a seeded start, so every (direction, split) gets users when n >= 4.
  rng = np.random.default_rng(seed)
  held = [overlap[i] for i in rng.permutation(len(overlap))[:n_eval]]
  n_valid = (n_eval + 1) // 2
  assigned = {direction: {} for direction in DIRECTIONS}
  for split, members in zip(SPLITS, (held[:n_valid], held[n_valid:])):
    start = int(rng.integers(2))
    for direction in DIRECTIONS:
      assigned[direction][split] = []
    for j, code in enumerate(members):
      assigned[DIRECTIONS[(start + j) % 2]][split].append(code)

  evals: dict[str, dict[str, tuple[list[str], list[list[int]], list[int]]]] = {}
  hidden = hidden_source = 0
  empty_source = {direction: 0 for direction in DIRECTIONS}
  for direction in DIRECTIONS:
    src, tgt = direction_domains(direction)
    evals[direction] = {}
    for split in SPLITS:
      codes = users.sort_codes(assigned[direction][split])
      target_seqs = seqs[tgt](codes)
      labels = [s[-1] for s in target_seqs]
      hidden += sum(len(s) - 1 for s in target_seqs)
      # The input is the source history up to the label's time (as the LLMCDSR split shows the
      # history before the held-out item): a source item bought after the label is not shown.
      # Items at the label's very time are kept: their order is unknown (2014/2018 times are days).
      full = seqs[src](codes)
      sources = seqs[src].until(codes, seqs[tgt].last_times(codes))
      hidden_source += sum(len(a) - len(b) for a, b in zip(full, sources))
      empty_source[direction] += sum(not s for s in sources)
      evals[direction][split] = ([users.ids[c] for c in codes], sources, labels)

  held_set = set(held)
  a_only = users.sort_codes(np.setdiff1d(seqs["A"].codes, seqs["B"].codes))
  b_only = users.sort_codes(np.setdiff1d(seqs["B"].codes, seqs["A"].codes))
  train_overlap = [c for c in overlap if c not in held_set]
  pools = {
      "A_only": ([users.ids[c] for c in a_only], {"A": seqs["A"](a_only)}),
      "B_only": ([users.ids[c] for c in b_only], {"B": seqs["B"](b_only)}),
      "overlap": ([users.ids[c] for c in train_overlap],
                  {d: seqs[d](train_overlap) for d in DOMAINS}),
  }
  # The order between an overlap user's two domains, by time; ties count as before (as `until`).
  times = {d: seqs[d].times_of(train_overlap) for d in DOMAINS}
  overlap_before = {
      d: [np.searchsorted(other, mine, side="right").tolist()
          for mine, other in zip(times[d], times["B" if d == "A" else "A"])]
      for d in DOMAINS}
  stats["num_users"] = {"A_only": len(a_only), "B_only": len(b_only), "overlap": len(train_overlap),
                        "overlap_total": len(overlap)}
  stats["eval_users"] = {direction: {split: len(evals[direction][split][0]) for split in SPLITS}
                         for direction in DIRECTIONS}
  stats["eval_hidden_interactions"] = hidden
  stats["eval_hidden_later_source_items"] = hidden_source
  stats["eval_users_with_empty_source"] = empty_source
  return RawDataset(items=items, pools=pools, eval=evals, overlap_before=overlap_before), stats
