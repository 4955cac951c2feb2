"""The bridge: offline clues without an LLM, honest about being a stand-in (DESIGN.md §5).

Mode "neighbours" (the default). A user's clue is the target items of the k training overlap users whose
source histories are most like the user's, ranked by similarity-weighted votes:

  sim(u, v)    = cos(set of u's source items, set of v's source items)
                 + text_weight * cos(mean source-title embedding of u, that of v)
  score(u, j)  = sum over the top-k neighbours v of u with sim > 0 of sim(u, v) * 1[v has target item j]

The overlap users' sides come from their whole training histories; the query user's source side is what
the caller passes (the last `maxlen` items in `make_bridge_clues`). A training overlap user asked for its
own clue is never its own neighbour: otherwise its real target items would leak into its pseudo sequence.
Ties between neighbours of equal similarity go to the lower overlap-pool row (`lax.top_k`).

Mode "mf": score(u, j) = the joint MF baseline's fold-in score of target item j from u's source items
(`baselines.mf`): a clue that carries the structure learned over every training user, single-domain users
included, where the neighbours see only the overlap users (on Food-Kitchen the overlap-only signals do not
transfer from valid to test, and the joint MF does: DESIGN.md §1). A training overlap user's own row is
one of the ~51k rows the factors were fitted on, so its clue is not fully blind to its target side.

Mode "text": score(u, j) = cos(mean source-title embedding of u, title embedding of target item j). It
needs no overlap users, but DESIGN.md §1 measured it near chance on Food-Kitchen: prefer "neighbours".

Everything runs in fixed-shape batches through jitted functions: the overlap users' binary source / target
matrices are sparse (BCOO) and never densified; a user batch is one multi-hot row block.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lgcd_jax.baselines import mf
from lgcd_jax.data import interactions
from lgcd_jax.data.clue_records import ClueSet, validate_clues
from lgcd_jax.data.pipeline import pad_ragged_left
from lgcd_jax.data.prepared import PreparedDataset, direction_domains
from lgcd_jax.data.ragged import Ragged, offsets_from_lengths

MODES = ("neighbours", "text", "mf")
BRIDGE_POOLS = ("single", "overlap", "valid", "test")


def _mean_title(src_items_plus_one: jax.Array, title_emb: jax.Array) -> jax.Array:
  """[B, L] items+1 -> [B, D]: L2-normalised mean title embedding over the non-pad positions."""
  table = jnp.concatenate([jnp.zeros((1, title_emb.shape[1]), title_emb.dtype), title_emb])
  e = table[src_items_plus_one]  # pad (0) reads the zero row
  count = jnp.sum(src_items_plus_one > 0, axis=1, keepdims=True)
  mean = jnp.sum(e, axis=1) / jnp.maximum(count, 1)
  return mean / jnp.maximum(jnp.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


@jax.jit
def _text_scores(src_items_plus_one, src_title_emb, tgt_title_emb):
  user = _mean_title(src_items_plus_one, src_title_emb)
  tgt = tgt_title_emb / jnp.maximum(jnp.linalg.norm(tgt_title_emb, axis=1, keepdims=True), 1e-12)
  return user @ tgt.T


def text_scores(src_items_plus_one, src_title_emb, tgt_title_emb) -> jax.Array:
  """[B, nT]: cosine between the mean of the user's source-title embeddings and each target title.

  A user without source items gets all zeros.
  """
  return _text_scores(jnp.asarray(src_items_plus_one, jnp.int32), jnp.asarray(src_title_emb, jnp.float32),
                      jnp.asarray(tgt_title_emb, jnp.float32))


class NeighbourBridge:
  """Similarity-weighted votes of the k most similar training overlap users (see the module docstring)."""

  def __init__(self, ds: PreparedDataset, direction: str, *, k: int = 50, text_weight: float = 0.0,
               src_title_emb: np.ndarray | None = None):
    src, tgt = direction_domains(direction)
    self.direction = direction
    self.num_src, self.num_tgt = ds.num_items(src), ds.num_items(tgt)
    overlap = ds.pools["overlap"]
    n = len(overlap[src])
    if n == 0:
      raise ValueError("the neighbour bridge needs training overlap users; use mode 'text' without them")
    if k < 1:
      raise ValueError(f"k must be positive, got {k}")
    self.num_overlap = n
    self.k = min(int(k), n)
    self.text_weight = float(text_weight)
    # Stored transposed ([items, users]) so both products are sparse @ dense, as in co-occurrence.
    matrices = interactions.overlap_matrices(ds, direction)
    self.s_t, self.t_t = matrices.s_t, matrices.t_t
    self.inv_norm = jnp.asarray(1.0 / np.sqrt(np.maximum(matrices.src_distinct, 1.0)), jnp.float32)

    self.use_text = self.text_weight != 0.0
    if self.use_text:
      if src_title_emb is None:
        raise ValueError("text_weight != 0 needs src_title_emb")
      emb = np.asarray(src_title_emb, np.float32)
      if emb.ndim != 2 or emb.shape[0] != self.num_src:
        raise ValueError(f"src_title_emb has shape {emb.shape}, expected [{self.num_src}, dim]")
      self.src_emb = jnp.asarray(emb)
      # Overlap users' mean source-title embedding over every position of their history.
      seqs = overlap[src]
      rows = np.repeat(np.arange(n), seqs.lengths())
      pos = interactions.bcoo(rows, seqs.values, (n, self.num_src))  # repeated items sum, as positions do
      count = np.maximum(seqs.lengths(), 1).astype(np.float32)[:, None]
      mean = np.asarray(pos @ self.src_emb) / count
      mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
      self.ov_text = jnp.asarray(mean, jnp.float32)
    else:
      self.src_emb = jnp.zeros((1, 1), jnp.float32)
      self.ov_text = jnp.zeros((1, 1), jnp.float32)
    self._scores = jax.jit(self._scores_impl)
    self._top = jax.jit(self._top_impl, static_argnums=(0,))

  def _sims(self, s_t, inv_norm, src_emb, ov_text, src, exclude):
    """[B, num_overlap] similarities; the excluded row is -inf."""
    b = src.shape[0]
    # The multi-hot of the distinct source items, built directly as [nS, B] (row 0 = pad, dropped):
    # transposing a [B, nS] one would cost more than the sparse product itself.
    x_t = jnp.zeros((self.num_src + 1, b), jnp.float32).at[src.T, jnp.arange(b)[None, :]].set(1.0)[1:]
    shared = (s_t.T @ x_t).T  # [B, n]: source items shared with each overlap user
    q_norm = jax.lax.rsqrt(jnp.maximum(jnp.sum(x_t, axis=0), 1.0))
    sim = shared * q_norm[:, None] * inv_norm[None, :]
    if self.use_text:
      sim = sim + self.text_weight * (_mean_title(src, src_emb) @ ov_text.T)
    own = jnp.arange(self.num_overlap)[None, :] == exclude[:, None]
    return jnp.where(own, -jnp.inf, sim)

  def _scores_impl(self, s_t, t_t, inv_norm, src_emb, ov_text, src, exclude):
    sim = self._sims(s_t, inv_norm, src_emb, ov_text, src, exclude)
    top_sim, top_row = jax.lax.top_k(sim, self.k)
    weight = jnp.where(top_sim > 0, top_sim, 0.0)  # only similar neighbours vote (never -inf / < 0)
    b = src.shape[0]
    cols = jnp.broadcast_to(jnp.arange(b)[None, :], (self.k, b))
    w_t = jnp.zeros((self.num_overlap, b), jnp.float32).at[top_row.T, cols].set(weight.T)  # k per column
    return (t_t @ w_t).T  # [B, nT]

  def _top_impl(self, clue_len, s_t, t_t, inv_norm, src_emb, ov_text, src, exclude):
    return jax.lax.top_k(self._scores_impl(s_t, t_t, inv_norm, src_emb, ov_text, src, exclude),
                         clue_len)

  def _args(self, src_items_plus_one, exclude_overlap_rows):
    src = jnp.asarray(src_items_plus_one, jnp.int32)
    exclude = jnp.asarray(exclude_overlap_rows, jnp.int32).reshape(-1)
    if exclude.shape[0] != src.shape[0]:
      raise ValueError(f"{src.shape[0]} users but {exclude.shape[0]} exclude rows")
    return self.s_t, self.t_t, self.inv_norm, self.src_emb, self.ov_text, src, exclude

  def scores(self, src_items_plus_one: np.ndarray, exclude_overlap_rows: np.ndarray) -> jax.Array:
    """[B, num_target_items] neighbour votes.

    src_items_plus_one: [B, L] source items + 1, left-padded with 0. exclude_overlap_rows: [B] row of the
    training overlap pool that may not be a neighbour of that user (the user itself), -1 for none.
    """
    return self._scores(*self._args(src_items_plus_one, exclude_overlap_rows))

  def top(self, src_items_plus_one: np.ndarray, exclude_overlap_rows: np.ndarray,
          clue_len: int) -> tuple[jax.Array, jax.Array]:
    """(scores, items) [B, clue_len] of the best-voted target items, without leaving the device."""
    return self._top(int(clue_len), *self._args(src_items_plus_one, exclude_overlap_rows))


class TextBridge:
  """Mode "text": cosine of the user's mean source-title embedding with each target title."""

  def __init__(self, ds: PreparedDataset, direction: str, *, src_title_emb: np.ndarray | None,
               tgt_title_emb: np.ndarray | None):
    if src_title_emb is None or tgt_title_emb is None:
      raise ValueError("mode 'text' needs src_title_emb and tgt_title_emb")
    src, tgt = direction_domains(direction)
    self.s_emb = jnp.asarray(src_title_emb, jnp.float32)
    self.t_emb = jnp.asarray(tgt_title_emb, jnp.float32)
    if self.s_emb.shape[0] != ds.num_items(src) or self.t_emb.shape[0] != ds.num_items(tgt) or (
        self.s_emb.shape[1] != self.t_emb.shape[1]):
      raise ValueError(f"title embeddings of shapes {self.s_emb.shape} / {self.t_emb.shape} do not "
                       f"match the catalogues ({ds.num_items(src)} / {ds.num_items(tgt)} items)")
    self._top = jax.jit(lambda clue_len, src, e_s, e_t: jax.lax.top_k(_text_scores(src, e_s, e_t),
                                                                       clue_len),
                        static_argnums=(0,))

  def scores(self, src_items_plus_one: np.ndarray, exclude_overlap_rows=None) -> jax.Array:
    """[B, num_target_items] text scores (no neighbours, so nothing to exclude)."""
    del exclude_overlap_rows
    return _text_scores(jnp.asarray(src_items_plus_one, jnp.int32), self.s_emb, self.t_emb)

  def top(self, src_items_plus_one: np.ndarray, exclude_overlap_rows, clue_len: int
          ) -> tuple[jax.Array, jax.Array]:
    del exclude_overlap_rows  # text scores use no neighbours, so nothing can leak
    return self._top(int(clue_len), jnp.asarray(src_items_plus_one, jnp.int32), self.s_emb,
                     self.t_emb)


class MFBridge:
  """Mode "mf": the joint MF's fold-in scores of the target items (see the module docstring)."""

  def __init__(self, ds: PreparedDataset, direction: str, *, rank: int, item_power: float):
    missing = [p for p in ("A_only", "B_only", "overlap") if p not in ds.pools]
    if missing:
      raise ValueError(f"mode 'mf' factorises every training pool; this dataset lacks {missing}")
    self.mf = mf.JointMF(ds, direction, rank=rank, item_power=item_power)
    self._top = jax.jit(lambda clue_len, src: jax.lax.top_k(mf.fold_in_scores(
        self.mf.v_src, self.mf.v_tgt, self.mf.tgt_scale, src), clue_len), static_argnums=(0,))

  def scores(self, src_items_plus_one: np.ndarray, exclude_overlap_rows=None) -> jax.Array:
    del exclude_overlap_rows  # a factorisation has no neighbours to exclude
    return self.mf.score({"src": src_items_plus_one})

  def top(self, src_items_plus_one: np.ndarray, exclude_overlap_rows, clue_len: int
          ) -> tuple[jax.Array, jax.Array]:
    del exclude_overlap_rows
    return self._top(int(clue_len), jnp.asarray(src_items_plus_one, jnp.int32))


def make_bridge(ds: PreparedDataset, direction: str, *, mode: str = "neighbours", k: int = 50,
                text_weight: float = 0.0, src_title_emb: np.ndarray | None = None,
                tgt_title_emb: np.ndarray | None = None, mf_rank: int = 64,
                mf_item_power: float = 0.25):
  """The bridge of `mode` with these parameters (`scores` / `top`): one place for clue building, the
  LLM-only baseline and serving, so that all three use what the run's config says."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if mode == "neighbours":
    return NeighbourBridge(ds, direction, k=k, text_weight=text_weight, src_title_emb=src_title_emb)
  if mode == "mf":
    return MFBridge(ds, direction, rank=mf_rank, item_power=mf_item_power)
  return TextBridge(ds, direction, src_title_emb=src_title_emb, tgt_title_emb=tgt_title_emb)


def _pool_users(ds: PreparedDataset, direction: str, pool: str):
  """(clue pool name, user ids, source sequences, exclude rows) of one bridge pool name."""
  src, _ = direction_domains(direction)
  if pool in ("single", f"{src}_only"):
    name = f"{src}_only"
    ids, seqs = ds.pool_user_ids[name], ds.pools[name][src]
    return name, ids, seqs, np.full(len(ids), -1, np.int64)
  if pool == "overlap":
    ids, seqs = ds.pool_user_ids["overlap"], ds.pools["overlap"][src]
    return "overlap", ids, seqs, np.arange(len(ids), dtype=np.int64)  # never their own neighbour
  if pool in ("valid", "test"):
    users = ds.eval[direction][pool]
    return pool, users.user_ids, users.source, np.full(len(users), -1, np.int64)
  raise ValueError(f"unknown pool {pool!r}; expected some of {BRIDGE_POOLS} (or {src}_only)")


def make_bridge_clues(ds: PreparedDataset, direction: str, *, mode: str = "neighbours", k: int = 50,
                      clue_len: int = 20, text_weight: float = 0.0,
                      src_title_emb: np.ndarray | None = None, tgt_title_emb: np.ndarray | None = None,
                      maxlen: int = 50, batch_size: int = 1024,
                      pools: Sequence[str] = BRIDGE_POOLS, progress: bool = False,
                      text_dim: int = 384, stats: dict | None = None, mf_rank: int = 64,
                      mf_item_power: float = 0.25) -> ClueSet:
  """Bridge clues for every user of `pools` in `direction`, as one ClueSet.

  pools: "single" (the source domain's single-domain pool, recorded as "A_only" / "B_only"), "overlap"
  (training overlap users, shown only their source side and never their own neighbour), "valid", "test"
  (the eval users of the direction). Each user's clue: the top `clue_len` target items by score with
  score > 0, most likely first; sims = score / the user's best score, in (0, 1]. The bridge writes no
  summary: summary_emb is zeros of width `text_dim` (which the input pipeline checks against its config),
  has_summary False, summaries "".

  stats: when a dict is given, it is filled with {pool: {"users", "empty_clues", "empty_source"}}
  (empty_clues counts users with no clue item: neighbours that share no source item, or no source items),
  plus "seconds". The same counts are printed when `progress` is set.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  src_dom, tgt_dom = direction_domains(direction)
  num_tgt = ds.num_items(tgt_dom)
  if clue_len < 1:
    raise ValueError(f"clue_len must be positive, got {clue_len}")
  clue_len = min(int(clue_len), num_tgt)  # a tiny catalogue: every item may be in the clue
  if maxlen < 1 or batch_size < 1 or text_dim < 1:
    raise ValueError(f"maxlen, batch_size and text_dim must be positive, got {maxlen}, {batch_size}, "
                     f"{text_dim}")
  start = time.perf_counter()

  bridge = make_bridge(ds, direction, mode=mode, k=k, text_weight=text_weight,
                       src_title_emb=src_title_emb, tgt_title_emb=tgt_title_emb, mf_rank=mf_rank,
                       mf_item_power=mf_item_power)

  def top(src, exclude):
    return bridge.top(src, exclude, clue_len)

  ids_out, pools_out, items_out, sims_out = [], [], [], []
  stats = {} if stats is None else stats
  for pool in pools:
    name, ids, seqs, exclude = _pool_users(ds, direction, pool)
    n = len(ids)
    src = pad_ragged_left(seqs, maxlen)  # the last `maxlen` source items, +1, left-padded
    vals = np.zeros((n, clue_len), np.float32)
    items = np.zeros((n, clue_len), np.int32)
    for lo in range(0, n, batch_size):
      hi = min(n, lo + batch_size)
      # Pad the last batch to the fixed shape (one compilation); its extra rows are dropped.
      b_src = np.zeros((batch_size, maxlen), np.int32)
      b_exc = np.full(batch_size, -1, np.int64)
      b_src[:hi - lo], b_exc[:hi - lo] = src[lo:hi], exclude[lo:hi]
      v, i = jax.device_get(top(b_src, b_exc))
      vals[lo:hi], items[lo:hi] = v[:hi - lo], i[:hi - lo]
    keep, sims = relative_sims(vals)
    ids_out.append(np.asarray(ids, dtype=str))
    pools_out.append(np.full(n, name))
    items_out.append(Ragged(items[keep].astype(np.int32), offsets_from_lengths(keep.sum(axis=1))))
    sims_out.append(sims[keep].astype(np.float32))
    stats[name] = {"users": int(n), "empty_clues": int(np.sum(~keep[:, 0])) if n else 0,
                   "empty_source": int(np.sum(seqs.lengths() == 0))}
    if progress:
      print(f"bridge {mode} {direction} {name}: {n} users, {stats[name]['empty_clues']} empty clues",
            file=sys.stderr, flush=True)

  n_total = sum(len(x) for x in ids_out)
  values = np.concatenate([r.values for r in items_out]) if items_out else np.zeros(0, np.int32)
  lengths = np.concatenate([np.diff(r.offsets) for r in items_out]) if items_out else np.zeros(0)
  summaries = np.empty(n_total, dtype=object)
  summaries[:] = [""] * n_total
  clues = ClueSet(
      direction=direction,
      user_ids=np.concatenate(ids_out) if ids_out else np.zeros(0, str),
      pools=np.concatenate(pools_out) if pools_out else np.zeros(0, str),
      items=Ragged(values.astype(np.int32), offsets_from_lengths(lengths)),
      sims=np.concatenate(sims_out) if sims_out else np.zeros(0, np.float32),
      summary_emb=np.zeros((n_total, text_dim), np.float32),
      has_summary=np.zeros(n_total, bool),
      summaries=summaries,
      source=f"bridge:{mode}",
  )
  validate_clues(clues, num_tgt)
  stats["seconds"] = time.perf_counter() - start
  return clues


def relative_sims(top_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The bridge's clue rule on sorted top-k scores [n, C]: (keep = score > 0, score / row's best).

  top_k is sorted, so a row's kept entries are a prefix; shared by clue building and serving.
  """
  top_values = np.asarray(top_values)
  keep = top_values > 0
  best = np.where(keep[:, :1], top_values[:, :1], 1.0)
  return keep, top_values / best
