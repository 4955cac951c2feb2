"""The prepared dataset: the one on-disk format every later stage reads.

Every source (the LLMCDSR release, raw Amazon dumps, the synthetic demo) is turned into a `RawDataset`
in memory and written by `write_prepared`. A prepared directory holds:

  manifest.json        counts, the source and the arguments used, format version, negatives seed.
  items_A.jsonl        one line per domain-A item, in index order: {"index", "id", "title"}.
  items_B.jsonl        the same for domain B.
  users.npz            training pools as ragged int32 arrays (`<pool>.<domain>.values` / `.offsets`)
                       and user ids (`<pool>.user_ids`): pools `A_only` (A), `B_only` (B),
                       `overlap` (A and B, each in time order). Where the source knows the order
                       between an overlap user's two domains, `overlap.<d>.before` (values parallel
                       to `overlap.<d>.values`) counts the other domain's items that come before
                       each item, and the manifest says `"overlap_order": true`.
  eval_A2B.npz         held-out users for A->B, per split (`valid.` / `test.` prefix): `user_ids`,
                       `source.values` / `source.offsets` (their source-domain items in order),
                       `label` (target-domain index), `negatives` [n, num_negatives] (fixed, seeded,
                       never the label).
  eval_B2A.npz         the mirror.

Item indices are 0-based within their domain. Padding (index 0 = pad, items shifted by +1) is the
input pipeline's business, not the prepared data's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from lgcd_jax.data import atomic
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.ragged import Ragged  # re-exported: the format's sequences are ragged arrays

FORMAT_VERSION = 1
DOMAINS = ("A", "B")
DIRECTIONS = ("A2B", "B2A")
SPLITS = ("valid", "test")
POOLS = {"A_only": ("A",), "B_only": ("B",), "overlap": ("A", "B")}
DEFAULT_NUM_NEGATIVES = 999


def direction_domains(direction: str) -> tuple[str, str]:
  """'A2B' -> ('A', 'B'): (source domain, target domain)."""
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
  return direction[0], direction[2]


@dataclasses.dataclass
class EvalUsers:
  user_ids: np.ndarray  # [n] str
  source: Ragged  # source-domain items, in time order
  label: np.ndarray  # [n] int32 target-domain index
  negatives: np.ndarray  # [n, num_negatives] int32 target-domain indices, never the label

  def __len__(self) -> int:
    return len(self.label)


@dataclasses.dataclass
class RawDataset:
  """What a source parser produces, before negatives are drawn and the files are written.

  items[d]: list of (original id, title), position = index within the domain.
  pools: {"A_only": (user_ids, {"A": seqs}), "B_only": (user_ids, {"B": seqs}),
          "overlap": (user_ids, {"A": seqs, "B": seqs})}; seqs are lists of domain indices.
  eval: {direction: {split: (user_ids, source seqs, labels)}}.
  overlap_before: optional {domain: seqs parallel to the overlap pool's seqs of that domain}: for each
    item, how many of the user's other-domain items come before it (ties count as before, as an
    eval user's history holds every item up to the label). None where the source does not know the
    order between the two domains.
  """

  items: dict[str, list[tuple[str, str]]]
  pools: dict[str, tuple[list[str], dict[str, list[list[int]]]]]
  eval: dict[str, dict[str, tuple[list[str], list[list[int]], list[int]]]]
  overlap_before: dict[str, list[list[int]]] | None = None


@dataclasses.dataclass
class PreparedDataset:
  path: Path | None
  manifest: dict
  item_ids: dict[str, np.ndarray]  # domain -> [n] str
  titles: dict[str, list[str]]  # domain -> [n]
  pool_user_ids: dict[str, np.ndarray]
  pools: dict[str, dict[str, Ragged]]  # pool -> domain -> sequences
  eval: dict[str, dict[str, EvalUsers]]  # direction -> split -> users
  # domain -> [number of overlap items of that domain]: the other domain's items before each one
  # (RawDataset.overlap_before); None when the prepared data does not know the order.
  overlap_before: dict[str, np.ndarray] | None = None

  def num_items(self, domain: str) -> int:
    return len(self.item_ids[domain])

  def domain_sequences(self, domain: str) -> list[Ragged]:
    """Every training sequence of a domain: single-domain users and overlap users alike."""
    single = "A_only" if domain == "A" else "B_only"
    return [self.pools[single][domain], self.pools["overlap"][domain]]

  def item_index(self, domain: str) -> dict[str, int]:
    return {str(x): i for i, x in enumerate(self.item_ids[domain])}


def draw_negatives(labels: np.ndarray, num_items: int, num_negatives: int,
                   rng: np.random.Generator) -> np.ndarray:
  """For each label, `num_negatives` distinct items from [0, num_items) other than the label."""
  k = min(num_negatives, num_items - 1)
  out = np.empty((len(labels), k), dtype=np.int32)
  for row, label in enumerate(labels):
    draw = rng.choice(num_items - 1, size=k, replace=False)
    out[row] = draw + (draw >= label)  # skip the label: map [0, n-1) onto [0, n) \ {label}
  return out


def _check_indices(seqs, n: int, what: str) -> None:
  for i, s in enumerate(seqs):
    if len(s) and (min(s) < 0 or max(s) >= n):
      raise DataError(f"{what}: row {i} has an item index outside [0, {n})")


def write_prepared(raw: RawDataset, output: str | os.PathLike, *, source: str, arguments: dict,
                   seed: int = 0, num_negatives: int = DEFAULT_NUM_NEGATIVES,
                   overwrite: bool = False, extra_manifest: dict | None = None) -> dict:
  """Validates `raw`, draws the fixed sampled negatives, and writes the directory atomically."""
  n_items = {d: len(raw.items[d]) for d in DOMAINS}
  for d in DOMAINS:
    if n_items[d] == 0:
      raise DataError(f"domain {d} has no items")
  for pool, domains in POOLS.items():
    user_ids, seqs = raw.pools[pool]
    for d in domains:
      if len(seqs[d]) != len(user_ids):
        raise DataError(f"pool {pool}: {len(user_ids)} users but {len(seqs[d])} {d} sequences")
      _check_indices(seqs[d], n_items[d], f"pool {pool} domain {d}")

  if raw.overlap_before is not None:
    _check_overlap_before(raw)

  num_interactions = 0
  for pool, domains in POOLS.items():
    num_interactions += sum(len(s) for d in domains for s in raw.pools[pool][1][d])

  manifest_eval: dict = {}
  eval_arrays: dict[str, dict[str, np.ndarray]] = {}
  for di, direction in enumerate(DIRECTIONS):
    src, tgt = direction_domains(direction)
    manifest_eval[direction] = {}
    arrays = {}
    for si, split in enumerate(SPLITS):
      user_ids, sources, labels = raw.eval[direction][split]
      if not (len(user_ids) == len(sources) == len(labels)):
        raise DataError(f"eval {direction}/{split}: mismatched lengths")
      _check_indices(sources, n_items[src], f"eval {direction}/{split} source")
      labels = np.asarray(labels, dtype=np.int32).reshape(-1)
      _check_indices([labels], n_items[tgt], f"eval {direction}/{split} labels")
      rng = np.random.default_rng([seed, di, si])
      negatives = draw_negatives(labels, n_items[tgt], num_negatives, rng)
      ragged = Ragged.from_lists(sources)
      arrays.update({
          f"{split}.user_ids": np.asarray(user_ids, dtype=str),
          f"{split}.source.values": ragged.values,
          f"{split}.source.offsets": ragged.offsets,
          f"{split}.label": labels,
          f"{split}.negatives": negatives,
      })
      manifest_eval[direction][split] = len(labels)
      num_interactions += int(ragged.lengths().sum()) + len(labels)
    eval_arrays[direction] = arrays

  manifest = {
      "format_version": FORMAT_VERSION,
      "source": source,
      "arguments": arguments,
      "num_items": n_items,
      "num_users": {pool: len(raw.pools[pool][0]) for pool in POOLS},
      "eval_users": manifest_eval,
      "num_interactions": int(num_interactions),
      "num_negatives": int(min(num_negatives, min(n_items.values()) - 1)),
      "negatives_seed": int(seed),
  }
  if raw.overlap_before is not None:
    manifest["overlap_order"] = True
  if extra_manifest:
    manifest.update(extra_manifest)

  with atomic.atomic_directory(output, overwrite=overwrite) as tmp:
    for d in DOMAINS:
      with open(tmp / f"items_{d}.jsonl", "w", encoding="utf-8") as f:
        for i, (item_id, title) in enumerate(raw.items[d]):
          f.write(json.dumps({"index": i, "id": str(item_id), "title": str(title)},
                             ensure_ascii=False) + "\n")
    users = {}
    for pool, domains in POOLS.items():
      user_ids, seqs = raw.pools[pool]
      users[f"{pool}.user_ids"] = np.asarray(user_ids, dtype=str)
      for d in domains:
        ragged = Ragged.from_lists(seqs[d])
        users[f"{pool}.{d}.values"] = ragged.values
        users[f"{pool}.{d}.offsets"] = ragged.offsets
    if raw.overlap_before is not None:
      for d in POOLS["overlap"]:
        users[f"overlap.{d}.before"] = Ragged.from_lists(raw.overlap_before[d]).values
    np.savez(tmp / "users.npz", **users)
    for direction, arrays in eval_arrays.items():
      np.savez(tmp / f"eval_{direction}.npz", **arrays)
    with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2)
      f.write("\n")
  return manifest


def overlap_order_problem(counts: np.ndarray, own_lengths: np.ndarray,
                          other_lengths: np.ndarray) -> str | None:
  """What is wrong with one domain's `overlap.<d>.before` counts (flat, parallel to the overlap
  users' items of that domain, `own_lengths` per user), or None: each user's counts must rise from 0
  to at most the user's number of other-domain items (they slice that sequence)."""
  counts = np.asarray(counts)
  own_lengths, other_lengths = np.asarray(own_lengths), np.asarray(other_lengths)
  if counts.ndim != 1 or len(counts) != int(own_lengths.sum()):
    return f"{len(counts)} counts for {int(own_lengths.sum())} items"
  row = np.repeat(np.arange(len(own_lengths)), own_lengths)
  bad = (counts < 0) | (counts > other_lengths[row])
  bad[1:] |= (np.diff(counts) < 0) & (row[1:] == row[:-1])
  if not bad.any():
    return None
  i = int(row[np.argmax(bad)])
  return f"row {i}'s counts must rise from 0 to at most {int(other_lengths[i])} (its other-domain items)"


def _check_overlap_before(raw: RawDataset) -> None:
  _, seqs = raw.pools["overlap"]
  for d in POOLS["overlap"]:
    other = "B" if d == "A" else "A"
    before = raw.overlap_before.get(d)
    if before is None or len(before) != len(seqs[d]):
      raise DataError(f"overlap_before[{d!r}]: one count sequence per overlap user is needed")
    counts, own = [np.asarray(b).reshape(-1) for b in before], np.array([len(x) for x in seqs[d]])
    wrong = np.flatnonzero(np.array([len(c) for c in counts], dtype=np.int64) != own)
    if len(wrong):
      i = int(wrong[0])
      raise DataError(f"overlap_before[{d!r}]: row {i} has {len(counts[i])} counts for {own[i]} items")
    flat = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    problem = overlap_order_problem(flat, own, np.array([len(x) for x in seqs[other]]))
    if problem:
      raise DataError(f"overlap_before[{d!r}]: {problem}")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
  if not path.exists():
    raise DataError("missing file of the prepared dataset", path)
  with np.load(path, allow_pickle=False) as z:  # never unpickle
    return {k: z[k] for k in z.files}


def load_prepared(path: str | os.PathLike) -> PreparedDataset:
  path = Path(path)
  manifest_path = path / "manifest.json"
  if not manifest_path.exists():
    raise DataError("not a prepared dataset (no manifest.json); run `python -m lgcd_jax.data.prepare` "
                    "first", path)
  try:
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"invalid JSON: {e.msg}", manifest_path, e.lineno) from None
  if manifest.get("format_version") != FORMAT_VERSION:
    raise DataError(f"format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}",
                    manifest_path)
  item_ids, titles = {}, {}
  for d in DOMAINS:
    ids, ts = [], []
    items_path = path / f"items_{d}.jsonl"
    if not items_path.exists():
      raise DataError("missing file of the prepared dataset", items_path)
    with open(items_path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        try:
          rec = json.loads(line)
          ids.append(rec["id"])
          ts.append(rec["title"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise DataError(f"bad item record ({e})", items_path, lineno) from None
    item_ids[d] = np.asarray(ids, dtype=str)
    titles[d] = ts
  users = _load_npz(path / "users.npz")
  pools, pool_user_ids = {}, {}
  for pool, domains in POOLS.items():
    pool_user_ids[pool] = users[f"{pool}.user_ids"]
    pools[pool] = {d: Ragged(users[f"{pool}.{d}.values"], users[f"{pool}.{d}.offsets"])
                   for d in domains}
  overlap_before = None
  if manifest.get("overlap_order"):
    overlap_before = {}
    for d in POOLS["overlap"]:
      key = f"overlap.{d}.before"
      if key not in users:
        raise DataError(f"manifest says overlap_order but {key} is missing", path / "users.npz")
      problem = overlap_order_problem(users[key], pools["overlap"][d].lengths(),
                                      pools["overlap"]["B" if d == "A" else "A"].lengths())
      if problem:
        raise DataError(f"{key}: {problem}", path / "users.npz")
      overlap_before[d] = users[key]
  evals = {}
  for direction in DIRECTIONS:
    arrays = _load_npz(path / f"eval_{direction}.npz")
    evals[direction] = {
        split: EvalUsers(
            user_ids=arrays[f"{split}.user_ids"],
            source=Ragged(arrays[f"{split}.source.values"], arrays[f"{split}.source.offsets"]),
            label=arrays[f"{split}.label"],
            negatives=arrays[f"{split}.negatives"],
        ) for split in SPLITS
    }
  return PreparedDataset(path, manifest, item_ids, titles, pool_user_ids, pools, evals,
                         overlap_before)
