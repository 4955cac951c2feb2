"""Language clues (pseudo-overlap): the record format the LLM pipelines write and training reads.

A clue is what an LLM (or the offline bridge) says a user would want in the target domain: a ranked
list of target-domain items (already mapped from descriptions to real items, most likely first, each
with the similarity of the mapping) and the embedding of a short preference summary. One `ClueSet`
holds the clues of one direction for users of any pool: training single-domain users ("A_only" /
"B_only"), training overlap users ("overlap", shown only their source side) and held-out users
("valid" / "test").

On disk, one directory per direction:

  <clue_dir>/<direction>/shard-00000-of-00003.npz ...   np.savez, no pickle; each written atomically.
  <clue_dir>/<direction>/index.json                     {format_version, direction, source, text_dim,
                                                         num_users, shards, shard_sizes}; written last,
                                                         so a directory without it is incomplete.

A shard holds `user_ids`, `pools` (str), `items.values` (int32) / `items.offsets` (int64, rebased to
the shard), `sims` (float32, aligned with `items.values`), `summary_emb` [n, text_dim] float32,
`has_summary` (bool) and the summaries as UTF-8 bytes (`summaries.bytes` uint8 / `summaries.offsets`
int64), so that one long summary does not widen every row of a fixed-width string array.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from lgcd_jax.data import atomic
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import DIRECTIONS
from lgcd_jax.data.ragged import Ragged, offsets_from_lengths

FORMAT_VERSION = 1
CLUE_POOLS = ("A_only", "B_only", "overlap", "valid", "test")
INDEX_NAME = "index.json"
_SHARD_KEYS = ("user_ids", "pools", "items.values", "items.offsets", "sims", "summary_emb",
               "has_summary", "summaries.bytes", "summaries.offsets")


@dataclasses.dataclass
class ClueSet:
  """The clues of one direction, one row per (pool, user)."""

  direction: str  # "A2B" / "B2A"
  user_ids: np.ndarray  # [n] str
  pools: np.ndarray  # [n] str: "A_only" / "B_only" / "overlap" / "valid" / "test"
  items: Ragged  # target-domain item indices (0-based), in LLM order (most likely first)
  sims: np.ndarray  # float32, aligned with items.values: similarity of each mapped item
  summary_emb: np.ndarray  # [n, text_dim] float32 (zeros when none)
  has_summary: np.ndarray  # [n] bool
  summaries: np.ndarray  # [n] str (may be "")
  source: str  # e.g. "bridge:neighbours", "anthropic:<model>", "replay": results say which
  _index: dict | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

  def __len__(self) -> int:
    return len(self.user_ids)

  @property
  def text_dim(self) -> int:
    return int(self.summary_emb.shape[1])

  def lookup(self, pool: str, user_id: str) -> int | None:
    """The row of (pool, user_id), or None. The index is built once, on first use."""
    if self._index is None:
      self._index = {(str(p), str(u)): row for row, (p, u) in enumerate(zip(self.pools, self.user_ids))}
    return self._index.get((str(pool), str(user_id)))

  def rows(self, pool: str, user_ids) -> np.ndarray:
    """Rows of many users of one pool: int64 [len(user_ids)], -1 where a user has no clue."""
    return np.array([-1 if (r := self.lookup(pool, u)) is None else r for u in user_ids],
                    dtype=np.int64).reshape(-1)


def validate_clues(clues: ClueSet, num_target_items: int | None = None, where: object = None) -> None:
  """Raises DataError (naming `where`, a file, when given) if `clues` is inconsistent."""

  def fail(msg: str):
    raise DataError(msg, where)

  if clues.direction not in DIRECTIONS:
    fail(f"direction must be one of {DIRECTIONS}, got {clues.direction!r}")
  n = len(clues.user_ids)
  offsets, values = clues.items.offsets, clues.items.values
  if clues.summary_emb.ndim != 2:
    fail(f"summary_emb must be 2-D [n, text_dim], got shape {clues.summary_emb.shape}")
  lengths = {"user_ids": n, "pools": len(clues.pools), "items": len(offsets) - 1,
             "summary_emb": clues.summary_emb.shape[0], "has_summary": len(clues.has_summary),
             "summaries": len(clues.summaries)}
  if len(set(lengths.values())) != 1:
    fail(f"mismatched lengths: {lengths}")
  if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
    fail("items.offsets are not a valid ragged index into items.values")
  if clues.sims.shape != values.shape:
    fail(f"sims has shape {clues.sims.shape} but items.values has shape {values.shape}")
  if not np.all(np.isfinite(clues.sims)):
    fail(f"{int(np.sum(~np.isfinite(clues.sims)))} sims are NaN or infinite")
  if not np.all(np.isfinite(clues.summary_emb)):
    fail("summary_emb has NaN or infinite values")
  if len(values) and values.min() < 0:
    fail(f"item index {int(values.min())} is negative")
  if num_target_items is not None and len(values) and values.max() >= num_target_items:
    fail(f"item index {int(values.max())} out of range [0, {num_target_items})")
  bad_pools = sorted(set(np.unique(clues.pools).tolist()) - set(CLUE_POOLS))
  if bad_pools:
    fail(f"unknown pools {bad_pools}; expected some of {CLUE_POOLS}")
  if n:
    keys = np.char.add(np.char.add(clues.pools.astype(str), "\x00"), clues.user_ids.astype(str))
    if len(np.unique(keys)) != n:
      fail("a (pool, user_id) pair appears more than once")


def _encode_strings(strings) -> tuple[np.ndarray, np.ndarray]:
  encoded = [str(s).encode("utf-8") for s in strings]
  offsets = offsets_from_lengths([len(b) for b in encoded])
  return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def _decode_strings(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  raw = data.tobytes()
  out = np.empty(len(offsets) - 1, dtype=object)  # object: no fixed width, never pickled
  out[:] = [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]
  return out


def _shard_name(i: int, n: int) -> str:
  return f"shard-{i:05d}-of-{n:05d}.npz"


def save_clues(clues: ClueSet, out_dir: str | os.PathLike, shard_size: int = 10000) -> None:
  """Writes `out_dir/<direction>/` (see the module docstring); replaces an earlier save there."""
  if shard_size < 1:
    raise ValueError(f"shard_size must be positive, got {shard_size}")
  validate_clues(clues)
  d = Path(out_dir) / clues.direction
  d.mkdir(parents=True, exist_ok=True)
  # Mark the directory incomplete before touching shards: an old index must never describe new shards.
  (d / INDEX_NAME).unlink(missing_ok=True)
  n = len(clues)
  num_shards = max(1, -(-n // shard_size))
  names, sizes = [], []
  for s in range(num_shards):
    lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
    off = clues.items.offsets
    v_lo, v_hi = int(off[lo]), int(off[hi])
    s_bytes, s_offsets = _encode_strings(clues.summaries[lo:hi])
    buf = io.BytesIO()
    np.savez(buf, **{
        "user_ids": np.asarray(clues.user_ids[lo:hi], dtype=str),
        "pools": np.asarray(clues.pools[lo:hi], dtype=str),
        "items.values": np.asarray(clues.items.values[v_lo:v_hi], dtype=np.int32),
        "items.offsets": np.asarray(off[lo:hi + 1] - v_lo, dtype=np.int64),
        "sims": np.asarray(clues.sims[v_lo:v_hi], dtype=np.float32),
        "summary_emb": np.asarray(clues.summary_emb[lo:hi], dtype=np.float32),
        "has_summary": np.asarray(clues.has_summary[lo:hi], dtype=bool),
        "summaries.bytes": s_bytes,
        "summaries.offsets": s_offsets,
    })
    name = _shard_name(s, num_shards)
    atomic.atomic_write_bytes(d / name, buf.getvalue())
    names.append(name)
    sizes.append(hi - lo)
  atomic.atomic_write_json(d / INDEX_NAME, {
      "format_version": FORMAT_VERSION,
      "direction": clues.direction,
      "source": clues.source,
      "text_dim": clues.text_dim,
      "num_users": n,
      "shards": names,
      "shard_sizes": sizes,
  })
  # Shards of an earlier, larger save are no longer listed anywhere: remove them.
  for stale in d.glob("shard-*.npz"):
    if stale.name not in names:
      stale.unlink(missing_ok=True)


def _load_shard(path: Path, text_dim: int) -> ClueSet:
  if not path.exists():
    raise DataError("missing clue shard", path)
  try:
    with np.load(path, allow_pickle=False) as z:  # never unpickle
      missing = [k for k in _SHARD_KEYS if k not in z.files]
      if missing:
        raise DataError(f"clue shard lacks arrays {missing}", path)
      a = {k: z[k] for k in _SHARD_KEYS}
  except DataError:
    raise
  except Exception as e:  # zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError ...
    raise DataError(f"corrupt clue shard ({type(e).__name__}: {e})", path) from None
  if a["summary_emb"].ndim != 2 or a["summary_emb"].shape[1] != text_dim:
    raise DataError(f"summary_emb has shape {a['summary_emb'].shape}, index says text_dim {text_dim}",
                    path)
  if len(a["summaries.offsets"]) != len(a["user_ids"]) + 1:
    raise DataError("mismatched lengths: summaries.offsets vs user_ids", path)
  try:
    summaries = _decode_strings(a["summaries.bytes"], a["summaries.offsets"])
  except (UnicodeDecodeError, IndexError, TypeError) as e:
    raise DataError(f"bad summaries ({e})", path) from None
  return ClueSet(direction="", user_ids=a["user_ids"], pools=a["pools"],
                 items=Ragged(a["items.values"].astype(np.int32), a["items.offsets"].astype(np.int64)),
                 sims=a["sims"].astype(np.float32), summary_emb=a["summary_emb"].astype(np.float32),
                 has_summary=a["has_summary"].astype(bool), summaries=summaries, source="")


def load_clues(clue_dir: str | os.PathLike, direction: str,
               num_target_items: int | None = None) -> ClueSet:
  """Reads `clue_dir/<direction>/`; DataError naming the file on anything missing or inconsistent.

  Pass `num_target_items` to check that every item index is inside the target catalogue.
  """
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
  d = Path(clue_dir) / direction
  index_path = d / INDEX_NAME
  if not index_path.exists():
    raise DataError("no index.json: the clue directory is missing or its write did not finish",
                    index_path)
  try:
    index = json.loads(index_path.read_text(encoding="utf-8"))
    shards, text_dim, num_users = list(index["shards"]), int(index["text_dim"]), int(index["num_users"])
    source = str(index["source"])
  except json.JSONDecodeError as e:
    raise DataError(f"invalid JSON: {e.msg}", index_path, e.lineno) from None
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"bad clue index ({type(e).__name__}: {e})", index_path) from None
  if index.get("format_version") != FORMAT_VERSION:
    raise DataError(f"format_version {index.get('format_version')!r}, expected {FORMAT_VERSION}",
                    index_path)
  if index.get("direction") != direction:
    raise DataError(f"index is for direction {index.get('direction')!r}, expected {direction!r}",
                    index_path)
  parts = []
  for name in shards:
    path = d / name
    part = _load_shard(path, text_dim)
    part.direction, part.source = direction, source
    validate_clues(part, num_target_items, where=path)
    parts.append(part)
  if not parts:
    raise DataError("index lists no shards", index_path)
  clues = _concat(parts, direction, source, text_dim)
  if len(clues) != num_users:
    raise DataError(f"index says {num_users} users, shards hold {len(clues)}", index_path)
  validate_clues(clues, num_target_items, where=d)  # duplicates across shards
  return clues


def _concat(parts: list[ClueSet], direction: str, source: str, text_dim: int) -> ClueSet:
  values = np.concatenate([p.items.values for p in parts]).astype(np.int32)
  offsets = [np.zeros(1, np.int64)]
  base = 0
  for p in parts:
    offsets.append(np.asarray(p.items.offsets[1:], np.int64) + base)
    base += int(p.items.offsets[-1])
  summaries = np.empty(sum(len(p) for p in parts), dtype=object)
  summaries[:] = [str(s) for p in parts for s in p.summaries]
  return ClueSet(
      direction=direction,
      user_ids=np.concatenate([np.asarray(p.user_ids, dtype=str) for p in parts]),
      pools=np.concatenate([np.asarray(p.pools, dtype=str) for p in parts]),
      items=Ragged(values, np.concatenate(offsets)),
      sims=np.concatenate([np.asarray(p.sims, np.float32) for p in parts]),
      summary_emb=np.concatenate([np.asarray(p.summary_emb, np.float32).reshape(len(p), text_dim)
                                  for p in parts]),
      has_summary=np.concatenate([np.asarray(p.has_summary, bool) for p in parts]),
      summaries=summaries,
      source=source,
  )


def merge_clues(parts: list[ClueSet]) -> ClueSet:
  """Concatenates clue sets of one direction (e.g. per-pool or resumed pipeline runs).

  A (pool, user) pair may appear in only one part. Parts without any summary may have another
  text_dim (their zero embeddings are resized); the source is shared, or the distinct sources joined
  with "+".
  """
  if not parts:
    raise ValueError("merge_clues needs at least one ClueSet")
  directions = {p.direction for p in parts}
  if len(directions) != 1:
    raise ValueError(f"cannot merge clues of different directions {sorted(directions)}")
  dims = {p.text_dim for p in parts if np.any(p.has_summary)} or {max(p.text_dim for p in parts)}
  if len(dims) != 1:
    raise ValueError(f"cannot merge clues with summary embeddings of different sizes {sorted(dims)}")
  text_dim = dims.pop()
  resized = [p if p.text_dim == text_dim
             else dataclasses.replace(p, summary_emb=np.zeros((len(p), text_dim), np.float32))
             for p in parts]
  sources = list(dict.fromkeys(p.source for p in parts))
  merged = _concat(resized, parts[0].direction, "+".join(sources), text_dim)
  validate_clues(merged)
  return merged
