"""The input pipeline: prepared data + clues -> fixed-shape numpy batches, as grain datasets.

Every per-user array is padded once, when a pool is built; a batch is then fancy indexing. Training
datasets are infinite `grain.MapDataset`s whose element i is the global batch of training step i, a pure
function of (seed, i): resuming from a saved step (or grain iterator state) gives exactly the batches an
uninterrupted run would have seen. Each pool is read as an endless stream of per-epoch permutations
(epoch e is shuffled with a seed derived from (seed, stream, e)); batch k of a stream is positions
[k*B, (k+1)*B) of it, so every user is visited exactly once per epoch and batches may straddle epochs.

## The batch contract (shared by the input pipeline and the model)
All batches are dicts of numpy arrays with fixed shapes. Item inputs are shifted by +1 so that 0 is padding
(input index = domain index + 1); labels and negatives stay 0-based domain indices (they index score columns
directly: score column j is item j). Sequences are LEFT-padded: the most recent item is at position L-1.

Single-domain sequence batch (encoder pre-training, next-item objective), per domain:
  seq        int32 [B, maxlen+1]   items+1, left-padded; inputs are seq[:, :-1], targets seq[:, 1:]
  weight     float32 [B]           1 for real rows, 0 for padding rows

Training pair batch (the diffusion model), direction src->tgt:
  src        int32 [B, maxlen]     source-domain items+1, left-padded
  tgt        int32 [B, maxlen]     target-domain sequence items+1, left-padded: the real target sequence
                                   (real pathway; with data.real_pairs = "next" the one target item that
                                   follows `src`) or the pseudo sequence built from clue items (pseudo pathway;
                                   the clue items in reverse LLM order so that the most likely item is last)
  tgt_weight float32 [B, maxlen]   1.0 for real items, the clue similarity for pseudo items, 0 for padding
  clue       int32 [B, clue_len]   the user's clue items (target domain)+1 in LLM order (most likely first),
                                   RIGHT-padded with 0
  clue_sim   float32 [B, clue_len] similarity of each clue item (0 for padding)
  summary    float32 [B, text_dim] embedding of the LLM's preference summary (zeros if none)
  has_summary float32 [B]          1 if summary is present
  real       int32 [B]             1 = real pathway (overlap user), 0 = pseudo pathway
  weight     float32 [B]           1 for actual examples, 0 for padding rows
  user       int32 [B]             row index of the user within its pool, -1 for padding (debugging only)

Evaluation batch, direction src->tgt:
  src, clue, clue_sim, summary, has_summary   as above
  label      int32 [B]             target-domain index (0-based) of the held-out item
  negatives  int32 [B, num_neg]    fixed sampled negatives (0-based), never the label
  weight     float32 [B]           1 for real users, 0 for padding rows (the last batch is padded, never dropped)
  user       int32 [B]             row index in the eval split, -1 for padding

Choices of this module within the contract: training batches are always full (weight 1, user >= 0);
the padding rows of the last eval batch repeat the split's last user (with weight 0 and user -1) rather
than being all zeros, so that a model never sees an all-padding sequence that could yield NaN scores
(NaN * 0 is still NaN in a weighted sum).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Sequence

import grain
import numpy as np

from lgcd_jax import user_keys
from lgcd_jax.data.clue_records import ClueSet
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import DOMAINS, PreparedDataset, direction_domains
from lgcd_jax.data.ragged import Ragged, offsets_from_lengths

POOL_NAMES = ("real", "pseudo")
REAL_PAIRS = ("whole", "next")  # data.real_pairs: how overlap users become real pairs (PairPools.build)
# Stream ids keep the permutations of different streams independent under one seed.
_STREAM_IDS = {"seq:A": 0, "seq:B": 1, "real": 2, "pseudo": 3, "mixed": 4}


def pad_left(seq: Sequence, length: int, shift: int = 1, dtype=np.int32) -> np.ndarray:
  """The most recent `length` items, +shift, left-padded with 0: the last item lands at length-1."""
  seq = np.asarray(seq).reshape(-1)[-length:] if length > 0 else np.zeros(0)
  out = np.zeros(length, dtype=dtype)
  if len(seq):
    out[length - len(seq):] = seq + shift
  return out


def pad_right(seq: Sequence, length: int, shift: int = 1, dtype=np.int32) -> np.ndarray:
  """The first `length` items, +shift, right-padded with 0 (clues keep the most likely items)."""
  seq = np.asarray(seq).reshape(-1)[:length]
  out = np.zeros(length, dtype=dtype)
  out[:len(seq)] = seq + shift
  return out


def _ragged_pad(values: np.ndarray, offsets: np.ndarray, length: int, *, left: bool, shift=0,
                dtype=np.int32) -> np.ndarray:
  """pad_left / pad_right of every row of a ragged array at once, without a Python loop over rows."""
  offsets = np.asarray(offsets, np.int64)
  n = len(offsets) - 1
  keep = np.minimum(np.diff(offsets), length)
  out = np.zeros((n, length), dtype=dtype)
  total = int(keep.sum())
  if total == 0:
    return out
  rows = np.repeat(np.arange(n), keep)
  j = np.arange(total) - np.repeat(offsets_from_lengths(keep)[:-1], keep)  # position within the kept part
  if left:  # the most recent items, ending at column length-1
    src = np.repeat(offsets[1:] - keep, keep) + j
    cols = np.repeat(length - keep, keep) + j
  else:  # the first items, starting at column 0
    src = np.repeat(offsets[:-1], keep) + j
    cols = j
  out[rows, cols] = values[src] + shift
  return out


def pad_ragged_left(r: Ragged, length: int, shift: int = 1) -> np.ndarray:
  """[len(r), length] int32: pad_left of every row."""
  return _ragged_pad(r.values, r.offsets, length, left=True, shift=shift)


def _select_rows(r: Ragged, rows: np.ndarray) -> tuple[Ragged, np.ndarray]:
  """The sub-ragged array of `rows` (in that order), and where its values sit in `r.values`."""
  rows = np.asarray(rows, np.int64)
  lengths = np.diff(r.offsets)[rows]
  offsets = offsets_from_lengths(lengths)
  within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
  idx = np.repeat(r.offsets[:-1][rows], lengths) + within
  return Ragged(r.values[idx], offsets), idx


def _permutation_stream(seed: int, stream: str, n: int):
  """positions -> rows: the endless concatenation of per-epoch permutations of range(n)."""

  @functools.lru_cache(maxsize=4)  # nearby steps share epochs; lru_cache is thread-safe
  def perm(epoch: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_IDS[stream], epoch]))
    return rng.permutation(n)

  def rows(start: int, count: int) -> np.ndarray:
    pos = np.arange(start, start + count, dtype=np.int64)
    epochs, within = np.divmod(pos, n)
    out = np.empty(count, np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = perm(int(e))[within[sel]]
    return out

  return rows


def _infinite(fn) -> grain.MapDataset:
  """An (effectively) infinite MapDataset whose element i is fn(i)."""
  return grain.MapDataset.range(sys.maxsize).map(fn)


def _process_range(batch_size: int, process_index: int | None, process_count: int | None):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (only needed for the multi-host default)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad process_index {process_index} / process_count {process_count}")
  if batch_size % process_count:
    raise ValueError(f"global batch size {batch_size} does not divide by process_count "
                     f"{process_count}")
  per = batch_size // process_count
  return process_index * per, (process_index + 1) * per


# ----------------------------------------------------------------------------------------------------
# Length buckets (data.length_buckets, data.length_window).
#
# Sequences are padded to maxlen once, when a pool is built, but most rows are short (Food-Kitchen's
# real pairs: mean source length 4.6 of 50; a `next` pair's target is one item). A training batch
# is therefore cut, on the host, to the smallest bucket width that holds its longest row: sequences
# are left-padded and the encoder masks padding (and aligns positions to the right end), so the
# cut columns are padding in every row and only the work changes. The width is taken over the
# global batch, so every process of a multi-host run cuts its slice alike. A few bucket widths keep
# the number of compiled shapes small. Random batches nearly always hold one long row; a length
# window sorts runs of consecutive batches by source length first, so that most batches are short.


def parse_length_buckets(spec, maxlen: int, field: str = "data.length_buckets") -> tuple[int, ...]:
  """data.length_buckets ("8,16,32", or a sequence of ints) -> sorted widths, maxlen last; the
  widths are capped at maxlen, so "" gives (maxlen,). Errors name `field`."""
  parts = (list(spec) if isinstance(spec, (list, tuple))
           else [p.strip() for p in str(spec or "").split(",") if p.strip()])
  widths = {int(maxlen)}
  for part in parts:
    try:
      width = int(part)
    except (TypeError, ValueError):
      raise ValueError(f"{field}: {part!r} is not an integer width") from None
    if isinstance(part, bool) or width < 1:
      raise ValueError(f"{field}: widths must be integers >= 1, got {part!r}")
    widths.add(min(width, int(maxlen)))
  return tuple(sorted(widths))


def needed_width(arr: np.ndarray) -> np.ndarray:
  """[n] for a left-padded [n, L] array: the trailing columns that hold each row's items
  (L - its first non-zero column; 0 for an all-padding row)."""
  nonzero = np.asarray(arr) != 0
  first = np.argmax(nonzero, axis=1)
  return np.where(nonzero.any(axis=1), nonzero.shape[1] - first, 0).astype(np.int32)


def bucket_width(need: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= need; need itself when no bucket is that wide (nothing is cut then:
  `parse_length_buckets` ends the buckets at maxlen, which holds every row)."""
  for width in sorted(buckets):
    if width >= need:
      return int(width)
  return int(need)


def length_sorted_batches(src: np.ndarray, batch_size: int, buckets: Sequence[int] | None
                          ) -> list[tuple[np.ndarray, np.ndarray, int]]:
  """(rows, real, width) of each batch of `batch_size` rows of the left-padded `src`: with `buckets`
  the rows sorted by needed width (stable) and `width` the smallest bucket that holds the batch's
  longest row (at least 1); without, the rows in order and `width` src's own. The last batch is
  padded with its last row (`real` False there)."""
  n = len(src)
  need = needed_width(src) if buckets else None
  order = np.argsort(need, kind="stable") if buckets else np.arange(n)
  out = []
  for lo in range(0, n, batch_size):
    pos = np.arange(lo, lo + batch_size)
    rows = order[np.minimum(pos, n - 1)]
    width = (bucket_width(max(int(need[rows].max()), 1), buckets) if buckets
             else int(src.shape[1]))
    out.append((rows, pos < n, width))
  return out


def _cut_left(arr: np.ndarray, width: int) -> np.ndarray:
  """The last `width` columns of a left-padded array (all of them when it is narrower)."""
  return arr[:, max(arr.shape[1] - width, 0):]


def _pad_left_to(arr: np.ndarray, width: int) -> np.ndarray:
  """A left-padded array widened to `width` columns with more padding (itself when that wide)."""
  if arr.shape[1] >= width:
    return arr
  return np.pad(arr, ((0, 0), (width - arr.shape[1], 0)))


def _length_windows(rows_of, lengths: np.ndarray, batch_size: int, window: int, seed: int,
                    stream: str):
  """k -> the global rows of batch k when runs of `window` consecutive batches of `rows_of` are sorted
  by `lengths` (stable: ties keep the shuffled order), cut into batches again, and those batches
  shuffled within their window. Every row is still drawn once per epoch of its stream, up to the
  window that straddles two epochs; batch k is a pure function of (seed, k)."""

  @functools.lru_cache(maxsize=2)  # the loop walks batches in order: one window at a time
  def group(g: int) -> np.ndarray:
    rows = rows_of(g * window * batch_size, window * batch_size)
    rows = rows[np.argsort(lengths[rows], kind="stable")].reshape(window, batch_size)
    order = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_IDS[stream], g, 1]))
    return rows[order.permutation(window)]

  def batch_rows(k: int) -> np.ndarray:
    g, j = divmod(k, window)
    return group(g)[j]

  return batch_rows


def _batch_rows(seed: int, stream: str, n: int, batch_size: int, lengths: np.ndarray | None,
                window: int):
  """k -> the global rows of a stream's k-th batch: consecutive positions of its per-epoch
  permutations, or with window > 0 those sorted by `lengths` in windows (`_length_windows`)."""
  rows_of = _permutation_stream(seed, stream, n)
  if window > 0:
    return _length_windows(rows_of, lengths, batch_size, window, seed, stream)
  return lambda k: rows_of(k * batch_size, batch_size)


def process_slice(batch: dict[str, np.ndarray], process_index: int,
                  process_count: int) -> dict[str, np.ndarray]:
  """This process's contiguous rows of a global batch (the global batch size must divide evenly)."""
  sizes = {len(v) for v in batch.values()}
  if len(sizes) != 1:
    raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
  lo, hi = _process_range(sizes.pop(), process_index, process_count)
  return {k: v[lo:hi] for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------
# Single-domain sequences (encoder pre-training).


def sequence_dataset(ds: PreparedDataset, domain: str, maxlen: int, batch_size: int, seed: int, *,
                     buckets: Sequence[int] | None = None, window: int = 0,
                     process_index: int | None = None,
                     process_count: int | None = None) -> grain.MapDataset:
  """Infinite batches {seq, weight} over every sequence of `domain` with at least 2 items.

  buckets: cut each batch's inputs (seq[:, :-1]) to the smallest of these widths that holds its
  longest row (None: maxlen); window: sort windows of that many batches by length first (see
  "Length buckets" above)."""
  if domain not in DOMAINS:
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
  seqs = np.concatenate([pad_ragged_left(r, maxlen + 1)[r.lengths() >= 2]
                         for r in ds.domain_sequences(domain)])
  if len(seqs) == 0:
    raise ValueError(f"domain {domain} has no sequence of length >= 2")
  lo, hi = _process_range(batch_size, process_index, process_count)
  need = needed_width(seqs) if buckets or window > 0 else None
  rows_of = _batch_rows(seed, f"seq:{domain}", len(seqs), batch_size, need, window)
  weight = np.ones(hi - lo, np.float32)

  def batch(step: int) -> dict[str, np.ndarray]:
    rows = rows_of(step)
    seq = seqs[rows[lo:hi]]
    if buckets:  # the inputs are seq[:, :-1]: bucket their width, keep the one target column
      seq = _cut_left(seq, bucket_width(int(need[rows].max()) - 1, buckets) + 1)
    return {"seq": seq, "weight": weight.copy()}

  return _infinite(batch)


# ----------------------------------------------------------------------------------------------------
# Training pairs: the real and the pseudo pool.


@dataclasses.dataclass
class Pool:
  """One pathway's users, padded once; `batch(rows)` is fancy indexing."""

  name: str  # "real" / "pseudo"
  src: np.ndarray  # [n, maxlen] int32
  tgt: np.ndarray  # [n, maxlen] int32
  tgt_weight: np.ndarray  # [n, maxlen] float32
  clue: np.ndarray  # [n, clue_len] int32
  clue_sim: np.ndarray  # [n, clue_len] float32
  summary_row: np.ndarray  # [n] int64 rows of the shared summary table (its last row is zeros)
  summary_table: np.ndarray  # [m + 1, text_dim] float32
  user: np.ndarray  # [n] int32 row of the user within its prepared pool

  def __len__(self) -> int:
    return len(self.src)

  @functools.cached_property
  def src_need(self) -> np.ndarray:
    """[n] the source columns each row needs (`needed_width`)."""
    return needed_width(self.src)

  @functools.cached_property
  def tgt_need(self) -> np.ndarray:
    """[n] the target columns each row needs."""
    return needed_width(self.tgt)

  def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    srow = self.summary_row[rows]
    return {
        "src": self.src[rows],
        "tgt": self.tgt[rows],
        "tgt_weight": self.tgt_weight[rows],
        "clue": self.clue[rows],
        "clue_sim": self.clue_sim[rows],
        "summary": self.summary_table[srow],
        "has_summary": (srow < len(self.summary_table) - 1).astype(np.float32),
        "real": np.full(len(rows), self.name == "real", np.int32),
        "weight": np.ones(len(rows), np.float32),
        "user": self.user[rows],
    }


class _ClueArrays:
  """Per-user clue arrays (clue, clue_sim, summary_row) gathered from a ClueSet, or empty ones."""

  def __init__(self, clues: ClueSet | None, direction: str, num_target_items: int, clue_len: int,
               text_dim: int):
    self.clues, self.clue_len = clues, clue_len
    if clues is None:
      self.table = np.zeros((1, text_dim), np.float32)
      return
    if clues.direction != direction:
      raise ValueError(f"clues are for {clues.direction}, the pipeline for {direction}")
    if clues.text_dim != text_dim:
      raise ValueError(f"clue summaries have text_dim {clues.text_dim}, the config says {text_dim}")
    if len(clues.items.values) and (clues.items.values.min() < 0 or
                                    clues.items.values.max() >= num_target_items):
      raise ValueError(f"clue item indices fall outside the target catalogue [0, {num_target_items})")
    # Users without a summary point at the appended zero row, so has_summary is one comparison.
    self.table = np.concatenate([clues.summary_emb.astype(np.float32),
                                 np.zeros((1, text_dim), np.float32)])

  def rows(self, pool: str, user_ids) -> np.ndarray:
    return (np.full(len(user_ids), -1, np.int64) if self.clues is None
            else self.clues.rows(pool, user_ids))

  def gather(self, rows: np.ndarray):
    """(items, sims, clue, clue_sim, summary_row) for clue rows; -1 is a user without a clue.

    items: the selected rows as a Ragged; sims: aligned with items.values.
    """
    n = len(rows)
    zero_row = len(self.table) - 1
    if self.clues is None:
      empty = Ragged(np.zeros(0, np.int32), np.zeros(n + 1, np.int64))
      return (empty, np.zeros(0, np.float32), np.zeros((n, self.clue_len), np.int32),
              np.zeros((n, self.clue_len), np.float32), np.full(n, zero_row, np.int64))
    have = rows >= 0
    # Users without a clue read an extra empty row appended after the last one.
    items = Ragged(self.clues.items.values,
                   np.concatenate([self.clues.items.offsets, self.clues.items.offsets[-1:]]))
    sub, idx = _select_rows(items, np.where(have, rows, len(self.clues)))
    sims = self.clues.sims[idx].astype(np.float32)
    clue = _ragged_pad(sub.values, sub.offsets, self.clue_len, left=False, shift=1)
    clue_sim = _ragged_pad(sims, sub.offsets, self.clue_len, left=False, dtype=np.float32)
    has_summary = np.append(self.clues.has_summary.astype(bool), False)  # [-1] -> False
    srow = np.where(have & has_summary[rows], rows, zero_row)
    return sub, sims, clue, clue_sim, srow


@dataclasses.dataclass
class PairPools:
  """The real pool (training overlap users) and the pseudo pool (single-domain source users + clues)."""

  direction: str
  real: Pool
  pseudo: Pool
  counts: dict  # real / pseudo sizes and the users left out, for the run's log
  clue_source: str | None  # where the clues came from ("bridge:neighbours", ...): results say which

  @classmethod
  def build(cls, ds: PreparedDataset, direction: str, clues: ClueSet | None, *, maxlen: int,
            clue_len: int, text_dim: int, real_pairs: str = "whole") -> "PairPools":
    """real_pairs: "whole" pairs each overlap user's whole source sequence with its whole target
    sequence; "next" makes one pair per target item, shaped like an eval user: the source items
    before it (the prepared data must know the order between the domains) against that item."""
    src_dom, tgt_dom = direction_domains(direction)
    ca = _ClueArrays(clues, direction, ds.num_items(tgt_dom), clue_len, text_dim)

    # Real pathway: overlap users with both sides; their clue (pool "overlap") when there is one.
    ov = ds.pools["overlap"]
    ok = np.flatnonzero((ov[src_dom].lengths() > 0) & (ov[tgt_dom].lengths() > 0))
    ov_ids = ds.pool_user_ids["overlap"]
    if real_pairs == "whole":
      src_seqs, _ = _select_rows(ov[src_dom], ok)
      tgt_seqs, _ = _select_rows(ov[tgt_dom], ok)
      users = ok
    elif real_pairs == "next":
      src_seqs, tgt_seqs, users = _next_item_pairs(ds, src_dom, tgt_dom, ok, maxlen)
    else:
      raise ValueError(f"real_pairs must be one of {REAL_PAIRS}, got {real_pairs!r}")
    crow = ca.rows("overlap", ov_ids[users])
    _, _, clue, clue_sim, srow = ca.gather(crow)
    tgt = pad_ragged_left(tgt_seqs, maxlen)
    real = Pool("real", pad_ragged_left(src_seqs, maxlen), tgt, (tgt > 0).astype(np.float32),
                clue, clue_sim, srow, ca.table, users.astype(np.int32))

    # Pseudo pathway: single-domain source users; tgt = clue items reversed (most likely last).
    single = f"{src_dom}_only"
    s_ids = ds.pool_user_ids[single]
    s_src = ds.pools[single][src_dom]
    crow_all = ca.rows(single, s_ids)
    n_items = np.zeros(len(s_ids), np.int64)
    if clues is not None:
      n_items[crow_all >= 0] = clues.items.lengths()[crow_all[crow_all >= 0]]
    keep = np.flatnonzero((n_items > 0) & (s_src.lengths() > 0))
    items, sims, clue, clue_sim, srow = ca.gather(crow_all[keep])
    # Reverse LLM order within each row: keep the `maxlen` most likely, most likely at the end.
    rev_items = Ragged(*_reverse_rows(items.values, items.offsets, maxlen))
    rev_sims, _ = _reverse_rows(sims, items.offsets, maxlen)
    tgt = pad_ragged_left(rev_items, maxlen)
    tgt_w = _ragged_pad(rev_sims, rev_items.offsets, maxlen, left=True, dtype=np.float32)
    pseudo = Pool("pseudo", pad_ragged_left(_select_rows(s_src, keep)[0], maxlen), tgt, tgt_w, clue,
                  clue_sim, srow, ca.table, keep.astype(np.int32))

    counts = {
        "real": len(real),
        "real_users": int(len(np.unique(users))),
        "real_with_clue": int(np.sum(crow >= 0)),
        "real_left_out_empty": int(len(ov_ids) - len(ok)),
        "pseudo": len(pseudo),
        "pseudo_left_out_no_clue": int(np.sum((n_items == 0) & (s_src.lengths() > 0))),
        "pseudo_left_out_empty_source": int(np.sum(s_src.lengths() == 0)),
    }
    return cls(direction, real, pseudo, counts, None if clues is None else clues.source)


def _next_item_pairs(ds: PreparedDataset, src_dom: str, tgt_dom: str, users: np.ndarray,
                     maxlen: int) -> tuple[Ragged, Ragged, np.ndarray]:
  """One pair per target item of the overlap `users` with a source item before it: (the source items
  before it, most recent `maxlen`; the item alone; the user's row), in user then time order."""
  if ds.overlap_before is None:
    raise DataError("data.real_pairs='next' needs the order between an overlap user's two domains, "
                    "which this prepared dataset does not hold: prepare it again with this version "
                    "(the llmcdsr, amazon and synthetic sources keep it), or use "
                    "data.real_pairs='whole'", ds.path)
  src, tgt = ds.pools["overlap"][src_dom], ds.pools["overlap"][tgt_dom]
  _, idx = _select_rows(tgt, users)  # where the users' target items sit in tgt.values
  lengths = np.diff(tgt.offsets)[users]
  row_user = np.repeat(users, lengths)
  before = ds.overlap_before[tgt_dom][idx].astype(np.int64)
  keep = before > 0  # a target item before any source item has no history to condition on
  row_user, before, idx = row_user[keep], before[keep], idx[keep]
  n_src = np.minimum(before, maxlen)
  starts = src.offsets[:-1][row_user] + before - n_src
  offsets = offsets_from_lengths(n_src)
  within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], n_src)
  src_values = src.values[np.repeat(starts, n_src) + within]
  tgt_r = Ragged(tgt.values[idx], np.arange(len(idx) + 1, dtype=np.int64))
  return Ragged(src_values, offsets), tgt_r, row_user


def _reverse_rows(values: np.ndarray, offsets: np.ndarray, keep: int):
  """Each row's first `keep` values, reversed: (values, offsets) of the new ragged array."""
  offsets = np.asarray(offsets, np.int64)
  lengths = np.minimum(np.diff(offsets), keep)
  new_off = offsets_from_lengths(lengths)
  j = np.arange(new_off[-1]) - np.repeat(new_off[:-1], lengths)
  src = np.repeat(offsets[:-1] + lengths - 1, lengths) - j
  return values[src], new_off


def train_dataset(pools: PairPools, batch_size: int, seed: int,
                  cycle: Sequence[str] = ("real", "pseudo", "pseudo"), cyclic: bool = True,
                  use_pseudo: bool = True, *, buckets: Sequence[int] | None = None,
                  window: int = 0, process_index: int | None = None,
                  process_count: int | None = None) -> grain.MapDataset:
  """Infinite pair batches; element i is (this process's slice of) the global batch of step i.

  cyclic: step i draws from pool cycle[i % len(cycle)], walking that pool's per-epoch permutations.
  Not cyclic (the ablation): each batch is drawn from the union of both pools, so the real share of a
  batch follows the real pool's share of the union. use_pseudo=False: the real pool only.
  buckets: cut each batch's src and tgt (with tgt_weight) columns to the smallest of these widths
  that holds its longest row (None: maxlen); window: sort windows of that many batches of each
  stream by source length first (see "Length buckets" above).
  """
  lo, hi = _process_range(batch_size, process_index, process_count)
  if len(pools.real) == 0:
    raise ValueError("the real pool is empty: no overlap user has both a source and a target sequence")
  if use_pseudo and len(pools.pseudo) == 0:
    raise ValueError(f"the pseudo pool is empty (no clues for the single-domain users of "
                     f"{pools.direction}); load clues or set use_pseudo=False")
  by_name = {"real": pools.real, "pseudo": pools.pseudo}
  by_length = window > 0

  def rows_of(name: str, n: int, lengths):
    return _batch_rows(seed, name, n, batch_size, lengths if by_length else None, window)

  def cut(out: dict, src_need: np.ndarray, tgt_need: np.ndarray) -> dict:
    """out with its sequence columns cut to the global batch's bucket widths."""
    if not buckets:
      return out
    src_w = bucket_width(int(src_need.max()), buckets)
    tgt_w = bucket_width(int(tgt_need.max()), buckets)
    return {**out, "src": _cut_left(out["src"], src_w), "tgt": _cut_left(out["tgt"], tgt_w),
            "tgt_weight": _cut_left(out["tgt_weight"], tgt_w)}

  def pool_batch(pool: Pool, rows: np.ndarray) -> dict:
    return cut(pool.batch(rows[lo:hi]), pool.src_need[rows], pool.tgt_need[rows])

  streams = {name: rows_of(name, len(p), p.src_need if by_length else None)
             for name, p in by_name.items() if len(p)}

  if not use_pseudo:
    def batch(step: int):
      return pool_batch(pools.real, streams["real"](step))
    return _infinite(batch)

  if cyclic:
    cycle = tuple(cycle)
    bad = set(cycle) - set(POOL_NAMES)
    if not cycle or bad:
      raise ValueError(f"cycle must be a non-empty sequence of {POOL_NAMES}, got {cycle!r}")
    per_cycle = {name: cycle.count(name) for name in POOL_NAMES}
    # before[j]: how often cycle[j] occurs in cycle[:j], i.e. which of the pool's turns step j is.
    before = [cycle[:j].count(cycle[j]) for j in range(len(cycle))]

    def batch(step: int):
      rounds, j = divmod(step, len(cycle))
      name = cycle[j]
      k = rounds * per_cycle[name] + before[j]  # this pool's k-th batch
      return pool_batch(by_name[name], streams[name](k))
    return _infinite(batch)

  n_real = len(pools.real)
  src_need = np.concatenate([pools.real.src_need, pools.pseudo.src_need])
  tgt_need = np.concatenate([pools.real.tgt_need, pools.pseudo.tgt_need])
  mixed = rows_of("mixed", n_real + len(pools.pseudo), src_need)

  def batch(step: int):
    global_rows = mixed(step)
    rows = global_rows[lo:hi]
    is_real = rows < n_real
    a, b = pools.real.batch(rows[is_real]), pools.pseudo.batch(rows[~is_real] - n_real)
    out = {}
    for key, va in a.items():
      out[key] = np.empty((len(rows),) + va.shape[1:], va.dtype)
      out[key][is_real], out[key][~is_real] = va, b[key]
    return cut(out, src_need[global_rows], tgt_need[global_rows])
  return _infinite(batch)


def make_train_iterator(dataset: grain.MapDataset, start_step: int = 0,
                        read_options: grain.ReadOptions | None = None) -> grain.DatasetIterator:
  """A grain iterator over `dataset` from element `start_step`.

  Its `get_state()` is a small JSON-able dict; `set_state()` of a saved state continues exactly where
  the saved iterator was. Batch assembly is cheap, so a couple of threads and a short buffer suffice.
  """
  if read_options is None:
    read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)
  it = dataset.to_iter_dataset(read_options).__iter__()
  if start_step:
    state = it.get_state()
    if "next_index" not in state:  # guard against a grain whose state layout changed
      raise RuntimeError(f"unexpected grain iterator state {state!r}")
    it.set_state({**state, "next_index": int(start_step)})
  return it


@dataclasses.dataclass
class TrainingData:
  """Everything a run trains on, built once from its config (`training_data`).

  sequences: per domain, the stage-1 next-item batches (element i: step i's batch); pools: the real
  and pseudo pair pools; pairs: the stage-2 pair batches (element j: the j-th diffusion step's),
  drawn by the cyclic batch sampler; use_pseudo: whether pseudo pairs are drawn at all.
  """
  src_domain: str
  tgt_domain: str
  sequences: dict
  pools: PairPools
  pairs: grain.MapDataset
  use_pseudo: bool

  def encoder_batches(self, step: int) -> tuple[dict, dict]:
    """(source, target) next-item batches of global step `step`. Cut to length buckets, the
    narrower is padded back to the wider's width: one compiled step per width, not per pair."""
    src, tgt = self.sequences[self.src_domain][step], self.sequences[self.tgt_domain][step]
    width = max(src["seq"].shape[1], tgt["seq"].shape[1])
    return tuple({**b, "seq": _pad_left_to(b["seq"], width)} for b in (src, tgt))


def training_data(config, ds: PreparedDataset, clues: ClueSet | None) -> TrainingData:
  """The sequence datasets, pair pools and cyclic pair dataset of a run's config (data.*, model.*,
  seed, direction): what the training loop, the benchmark and the multi-device probe train on."""
  src_dom, tgt_dom = direction_domains(config.direction)
  c = config
  spec = c.data.get("length_buckets", "")
  lengths = dict(buckets=parse_length_buckets(spec, c.data.maxlen) if spec else None,
                 window=int(c.data.get("length_window", 0)))
  sequences = {d: sequence_dataset(ds, d, c.data.maxlen, c.data.batch_size, c.seed + i, **lengths)
               for i, d in enumerate((src_dom, tgt_dom))}
  pools = PairPools.build(ds, c.direction, clues, maxlen=c.data.maxlen, clue_len=c.data.clue_len,
                          text_dim=c.clues.text_dim, real_pairs=c.data.get("real_pairs", "whole"))
  use_pseudo = bool(c.model.use_pseudo) and len(pools.pseudo) > 0
  pairs = train_dataset(pools, c.data.batch_size, c.seed, cycle=tuple(c.model.cycle.split(",")),
                        cyclic=c.model.cyclic_batch, use_pseudo=use_pseudo, **lengths)
  return TrainingData(src_dom, tgt_dom, sequences, pools, pairs, use_pseudo)


# ----------------------------------------------------------------------------------------------------
# Evaluation.


def eval_batches(ds: PreparedDataset, direction: str, split: str, clues: ClueSet | None, maxlen: int,
                 clue_len: int, text_dim: int, batch_size: int,
                 buckets: Sequence[int] | None = None) -> grain.MapDataset:
  """Batches covering every user of the split exactly once; the last is padded (weight 0).

  Without `buckets` the users come in split order, every batch maxlen wide. With them
  (`parse_length_buckets`) the users come sorted by source length (stable) and each batch's `src` is
  cut to the smallest bucket width that holds its longest row: the same users and scores (metrics
  are sums over users, each user's noise comes from its own key and the encoder masks padding), in
  a few batch shapes, with much less work for the many short histories. `user` stays the row in
  the split either way.
  """
  _, tgt_dom = direction_domains(direction)
  users = ds.eval[direction][split]
  ca = _ClueArrays(clues, direction, ds.num_items(tgt_dom), clue_len, text_dim)
  _, _, clue, clue_sim, srow = ca.gather(ca.rows(split, users.user_ids))
  src = pad_ragged_left(users.source, maxlen)
  label = np.asarray(users.label, np.int32)
  negatives = np.asarray(users.negatives, np.int32)
  # Each user's sampling noise comes from its own key (lgcd_jax.user_keys), not from its row.
  noise_id = user_keys.noise_ids(str(u) for u in users.user_ids)
  layout = length_sorted_batches(src, batch_size, buckets)

  def batch(b: int) -> dict[str, np.ndarray]:
    # Padding rows repeat the batch's last user (see the module docstring).
    rows, real, width = layout[b]
    batch_src = _cut_left(src[rows], width)
    return {
        "src": batch_src,
        "clue": clue[rows],
        "clue_sim": clue_sim[rows],
        "summary": ca.table[srow[rows]],
        "has_summary": (srow[rows] < len(ca.table) - 1).astype(np.float32),
        "label": label[rows],
        "negatives": negatives[rows],
        "weight": real.astype(np.float32),
        "user": np.where(real, rows, -1).astype(np.int32),
        "noise_id": noise_id[rows],
    }

  return grain.MapDataset.range(len(layout)).map(batch)


def eval_batches_for(config, ds: PreparedDataset, split: str,
                     clues: ClueSet | None = None) -> grain.MapDataset:
  """`eval_batches` with the shapes a run's config fixes (`data.*`, `clues.text_dim`, direction)."""
  spec, maxlen = config.data.get("eval_length_buckets", ""), config.data.maxlen
  buckets = parse_length_buckets(spec, maxlen, "data.eval_length_buckets") if spec else None
  return eval_batches(ds, config.direction, split, clues, maxlen=maxlen,
                      clue_len=config.data.clue_len, text_dim=config.clues.text_dim,
                      batch_size=config.data.eval_batch_size, buckets=buckets)
