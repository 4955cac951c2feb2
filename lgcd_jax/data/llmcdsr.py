"""Reads the processed LLMCDSR release (food-kitchen, movie-book) into a `RawDataset`.

Layout of the release (ids 0-based; one joint id space: A items 0..nA-1, B items nA..nA+nB-1):
  num.txt                     nA and nB, one per line
  train_A.txt / train_B.txt   single-domain users: `user<TAB>item,item,...` in time order
  train_overlap.txt           overlap users, A and B items interleaved in time order
  valid.txt / test.txt        held-out users, mixed history; the last item is the label
  item_set_{A,B}.pkl          dict ASIN -> index within the domain (untrusted: restricted unpickler)
  text_{A,B}.pkl              dict ASIN -> title, with raw HTML entities (`&amp;`, `&#39;`, ...) in
                              ~7-9 % of the Food-Kitchen titles: they are unescaped (html.unescape)

Inter-domain split (DESIGN.md §1): a valid/test line whose label is in B is an A2B user whose input is the
A items of the history, in order; the mirror for B2A. The B items of an A2B user's history stay hidden.
"""

from __future__ import annotations

import os
import html
from pathlib import Path

import numpy as np

from lgcd_jax.data import safe_pickle
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import RawDataset


def _read_ints(path: Path, count: int) -> list[int]:
  values = []
  for lineno, line in _lines(path):
    try:
      values.append(int(line))
    except ValueError:
      raise DataError(f"expected an integer, got {line[:40]!r}", path, lineno) from None
  if len(values) != count:
    raise DataError(f"expected {count} integers, found {len(values)}", path)
  return values


def _lines(path: Path):
  """(1-based line number, stripped line) for each non-blank line; errors name the file."""
  if not path.exists():
    raise DataError("file not found", path)
  try:
    with open(path, encoding="utf-8") as f:
      any_line = False
      for lineno, line in enumerate(f, 1):
        line = line.strip()
        if line:
          any_line = True
          yield lineno, line
  except UnicodeDecodeError as e:
    raise DataError(f"not UTF-8 text ({e.reason})", path) from None
  if not any_line:
    raise DataError("empty file", path)


def _read_sequences(path: Path, num_ids: int):
  """Yields (line number, user id, [joint item ids]) with every id checked against the catalogue."""
  seen_users = set()
  for lineno, line in _lines(path):
    parts = line.split("\t")
    if len(parts) != 2:
      raise DataError("expected `user<TAB>item,item,...`", path, lineno)
    user, items_text = parts[0].strip(), parts[1].strip()
    if not user:
      raise DataError("empty user id", path, lineno)
    if user in seen_users:
      raise DataError(f"user {user!r} appears twice", path, lineno)
    seen_users.add(user)
    try:
      items = [int(x) for x in items_text.split(",")]
    except ValueError:
      raise DataError(f"item list is not comma-separated integers: {items_text[:60]!r}", path,
                      lineno) from None
    for item in items:
      if not 0 <= item < num_ids:
        raise DataError(f"unknown item id {item} (valid ids are 0..{num_ids - 1})", path, lineno)
    yield lineno, user, items


def _item_table(input_dir: Path, domain: str, expected: int) -> list[tuple[str, str]]:
  index = safe_pickle.load_dict(input_dir / f"item_set_{domain}.pkl")
  titles = safe_pickle.load_dict(input_dir / f"text_{domain}.pkl")
  index_path = input_dir / f"item_set_{domain}.pkl"
  if len(index) != expected:
    raise DataError(f"{len(index)} items, but num.txt says {expected}", index_path)
  table: list[tuple[str, str] | None] = [None] * expected
  for asin, i in index.items():
    if not isinstance(asin, str) or not isinstance(i, int) or not 0 <= i < expected:
      raise DataError(f"bad entry {asin!r} -> {i!r} (expected ASIN -> index in 0..{expected - 1})",
                      index_path)
    if table[i] is not None:
      raise DataError(f"index {i} is used twice", index_path)
    title = titles.get(asin, "")
    if not isinstance(title, str):
      raise DataError(f"title of {asin!r} is not a string", input_dir / f"text_{domain}.pkl")
    table[i] = (asin, html.unescape(title).strip())  # stored, embedded and prompted unescaped
  return table  # every slot is filled: len == expected and no index is used twice


def build_llmcdsr(input_dir: str | os.PathLike) -> tuple[RawDataset, dict]:
  """Returns the raw dataset and statistics (e.g. eval users with an empty source history)."""
  input_dir = Path(input_dir)
  if not input_dir.is_dir():
    raise DataError("not a directory", input_dir)
  n_a, n_b = _read_ints(input_dir / "num.txt", 2)
  n_ids = n_a + n_b
  items = {"A": _item_table(input_dir, "A", n_a), "B": _item_table(input_dir, "B", n_b)}

  def single(name: str, domain: str):
    path = input_dir / name
    users, seqs = [], []
    for lineno, user, joint in _read_sequences(path, n_ids):
      in_a = [i < n_a for i in joint]
      if (domain == "A") != all(in_a) or (domain == "B" and any(in_a)):
        raise DataError(f"a {domain}-only user has an item of the other domain", path, lineno)
      users.append(user)
      seqs.append([i if domain == "A" else i - n_a for i in joint])
    return users, {domain: seqs}

  pools = {"A_only": single("train_A.txt", "A"), "B_only": single("train_B.txt", "B")}
  path = input_dir / "train_overlap.txt"
  users, seq_a, seq_b = [], [], []
  before = {"A": [], "B": []}  # the interleaved order: other-domain items before each item
  for lineno, user, joint in _read_sequences(path, n_ids):
    in_a = np.asarray([i < n_a for i in joint], dtype=bool)
    a = [i for i in joint if i < n_a]
    b = [i - n_a for i in joint if i >= n_a]
    if not a or not b:
      raise DataError("an overlap user needs items in both domains", path, lineno)
    users.append(user)
    seq_a.append(a)
    seq_b.append(b)
    a_so_far = np.cumsum(in_a)
    before["A"].append((np.flatnonzero(in_a) + 1 - a_so_far[in_a]).tolist())
    before["B"].append(a_so_far[~in_a].tolist())
  pools["overlap"] = (users, {"A": seq_a, "B": seq_b})

  evals = {"A2B": {}, "B2A": {}}
  empty_source = {"A2B": 0, "B2A": 0}
  for split in ("valid", "test"):
    per_dir = {"A2B": ([], [], []), "B2A": ([], [], [])}
    for _, user, joint in _read_sequences(input_dir / f"{split}.txt", n_ids):
      *history, label = joint
      to_b = label >= n_a
      direction = "A2B" if to_b else "B2A"
      source = [i for i in history if i < n_a] if to_b else [i - n_a for i in history if i >= n_a]
      empty_source[direction] += not source
      per_dir[direction][0].append(user)
      per_dir[direction][1].append(source)
      per_dir[direction][2].append(label - n_a if to_b else label)
    for direction in per_dir:
      evals[direction][split] = per_dir[direction]
  stats = {"eval_users_with_empty_source": empty_source}
  return RawDataset(items=items, pools=pools, eval=evals, overlap_before=before), stats
