"""From an LLM's words to real target items (DESIGN.md §2): descriptions -> nearest titles by cosine.

Each description is embedded with the config's text encoder and compared with every target title
embedding (`lgcd_jax.text.encoders.title_embeddings`). Its `nk` nearest items are kept with their cosine
similarity, except those under `sim_floor`; a description none of whose matches reaches the floor maps to
nothing and is counted as hallucinated. A user's clue is the concatenation of its descriptions' matches in
LLM order (within a description, by decreasing similarity), de-duplicated keeping the first occurrence,
optionally cut to `clue_len`. The preference summary is embedded with the same encoder (summary_emb).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lgcd_jax.data.clue_records import ClueSet, validate_clues
from lgcd_jax.data.ragged import Ragged, offsets_from_lengths


@dataclasses.dataclass(frozen=True)
class MappedClue:
  items: np.ndarray  # int32 target indices, LLM order, distinct
  sims: np.ndarray  # float32 cosine of each item to the description that brought it
  num_descriptions: int
  num_hallucinated: int  # descriptions with no match at or above the floor


def _normalise(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class Mapper:
  """Maps description lists to target items against one target catalogue."""

  def __init__(self, encoder, target_emb: np.ndarray, *, nk: int = 5, sim_floor: float = 0.3,
               clue_len: int = 0, chunk: int = 512):
    if nk < 1:
      raise ValueError(f"nk must be positive, got {nk}")
    self.encoder = encoder
    self.target = _normalise(target_emb)
    if self.target.ndim != 2 or self.target.shape[1] != encoder.dim:
      raise ValueError(f"target embeddings of shape {self.target.shape} do not match the encoder's "
                       f"dimension {encoder.dim}")
    self.nk = min(int(nk), self.target.shape[0])
    self.sim_floor = float(sim_floor)
    self.clue_len = int(clue_len)
    self.chunk = int(chunk)

  def nearest(self, descriptions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(items [n, nk] int32, sims [n, nk] float32) per description, by decreasing similarity."""
    n = len(descriptions)
    items = np.zeros((n, self.nk), np.int32)
    sims = np.zeros((n, self.nk), np.float32)
    if n == 0:
      return items, sims
    emb = _normalise(self.encoder.encode(list(descriptions)))
    for lo in range(0, n, self.chunk):
      hi = min(n, lo + self.chunk)
      s = emb[lo:hi] @ self.target.T
      if self.nk < s.shape[1]:
        part = np.argpartition(-s, self.nk - 1, axis=1)[:, :self.nk]
      else:
        part = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
      ps = np.take_along_axis(s, part, axis=1)
      order = np.lexsort((part, -ps), axis=1)  # by similarity, then by index for ties
      items[lo:hi] = np.take_along_axis(part, order, axis=1)
      sims[lo:hi] = np.take_along_axis(ps, order, axis=1)
    return items, sims

  def map_many(self, descriptions_per_user: Sequence[Sequence[str]]) -> list[MappedClue]:
    """One MappedClue per user; all descriptions are embedded in one pass."""
    flat = [d for descs in descriptions_per_user for d in descs]
    items, sims = self.nearest(flat)
    out, row = [], 0
    for descs in descriptions_per_user:
      chosen: list[int] = []
      chosen_sims: list[float] = []
      seen: set[int] = set()
      hallucinated = 0
      for _ in descs:
        keep = sims[row] >= self.sim_floor
        if not keep.any():
          hallucinated += 1
        for item, sim in zip(items[row][keep], sims[row][keep]):
          if int(item) not in seen:
            seen.add(int(item))
            chosen.append(int(item))
            chosen_sims.append(float(sim))
        row += 1
      if self.clue_len > 0:
        chosen, chosen_sims = chosen[:self.clue_len], chosen_sims[:self.clue_len]
      out.append(MappedClue(np.asarray(chosen, np.int32), np.asarray(chosen_sims, np.float32),
                            len(descs), hallucinated))
    return out

  def embed_summaries(self, summaries: Sequence[str]) -> np.ndarray:
    """float32 [n, dim]: the summaries' embeddings (zero rows for empty summaries)."""
    out = np.zeros((len(summaries), self.encoder.dim), np.float32)
    idx = [i for i, s in enumerate(summaries) if s.strip()]
    if idx:
      out[idx] = _normalise(self.encoder.encode([summaries[i] for i in idx]))
    return out


def build_clueset(direction: str, source: str, pools: Sequence[str], user_ids: Sequence[str],
                  clues: Sequence[MappedClue], summaries: Sequence[str], summary_emb: np.ndarray,
                  num_target_items: int) -> ClueSet:
  """The ClueSet of mapped clues, one row per user, validated against the target catalogue."""
  n = len(user_ids)
  text_dim = int(summary_emb.shape[1])
  values = (np.concatenate([c.items for c in clues]) if clues else np.zeros(0, np.int32))
  sims = (np.concatenate([c.sims for c in clues]) if clues else np.zeros(0, np.float32))
  offsets = offsets_from_lengths([len(c.items) for c in clues])
  summ = np.empty(n, dtype=object)
  summ[:] = [str(s) for s in summaries]
  has = np.array([bool(str(s).strip()) for s in summaries], dtype=bool).reshape(n)
  out = ClueSet(direction=direction, user_ids=np.asarray(list(user_ids), dtype=str).reshape(n),
                pools=np.asarray(list(pools), dtype=str).reshape(n),
                items=Ragged(values.astype(np.int32), offsets), sims=sims.astype(np.float32),
                summary_emb=np.asarray(summary_emb, np.float32).reshape(n, text_dim),
                has_summary=has, summaries=summ, source=source)
  validate_clues(out, num_target_items)
  return out
