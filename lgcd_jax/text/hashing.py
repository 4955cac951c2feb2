"""A cheap, deterministic sentence encoder: hashed word unigrams and bigrams (no model, no download).

Every text encoder of the project shares this interface:
  name    str, unique per configuration (includes the dimension); used as a cache key and file name part
  dim     int, the embedding size
  encode(texts, batch_size=256, progress=False) -> float32 [len(texts), dim], L2-normalised rows
          (a zero row for a text with no words)

The hashing encoder is the offline default: two titles that share words get a positive cosine, unrelated
titles a cosine near zero. Features are hashed with blake2b (keyed by the seed), never with Python's
`hash`, which is salted per process: the same text gives the same bytes in every process and on every
machine, so embeddings can be cached on disk.
"""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Sequence

import numpy as np

# Words: runs of letters or digits (any script); punctuation separates them.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
  """Lower-cased words of `text`."""
  return _WORD.findall(str(text).lower())



def _progress(text: str, done: int, total: int, step: int) -> None:
  """One progress report: redrawn in place on a terminal; in a log file (stderr not a terminal),
  a line of its own at about every tenth of the work, so that the lines do not run together."""
  if sys.stderr.isatty():
    print(f"\r{text}", end="", file=sys.stderr, flush=True)
    return
  tenth = max(total // 10, 1)
  if done == total or (done // tenth) != ((done - step) // tenth):
    print(text, file=sys.stderr, flush=True)

class HashingEncoder:
  """Signed feature hashing of lower-cased word unigrams and bigrams into `dim` buckets."""

  def __init__(self, dim: int = 384, seed: int = 0):
    if dim < 1:
      raise ValueError(f"dim must be positive, got {dim}")
    self.dim = int(dim)
    self.seed = int(seed)
    self.name = f"hashing-d{self.dim}-s{self.seed}"
    self._key = str(self.seed).encode("utf-8")
    # Titles repeat words a lot; remembering (bucket, sign) per feature makes encoding ~10x faster.
    self._memo: dict[str, tuple[int, float]] = {}

  def _bucket(self, feature: str) -> tuple[int, float]:
    hit = self._memo.get(feature)
    if hit is None:
      h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8,
                                         key=self._key).digest(), "little")
      # Low bits pick the bucket, the top bit the sign (independent enough for dim << 2**63).
      hit = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
      if len(self._memo) < 1_000_000:  # bound the memo on huge vocabularies
        self._memo[feature] = hit
    return hit

  def features(self, text: str) -> list[str]:
    """The hashed features of one text: unigrams, and bigrams joined by a space."""
    words = tokenize(text)
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

  def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """float32 [len(texts), dim], L2-normalised rows; zero rows for texts without words."""
    n = len(texts)
    out = np.zeros((n, self.dim), np.float32)
    batch_size = max(1, int(batch_size))
    for lo in range(0, n, batch_size):
      hi = min(n, lo + batch_size)
      rows, cols, vals = [], [], []
      for r in range(lo, hi):
        for f in self.features(texts[r]):
          c, s = self._bucket(f)
          rows.append(r)
          cols.append(c)
          vals.append(s)
      if rows:
        np.add.at(out, (np.asarray(rows), np.asarray(cols)), np.asarray(vals, np.float32))
      if progress:
        _progress(f"{self.name}: {hi}/{n} texts", hi, n, batch_size)
    if progress and n and sys.stderr.isatty():
      print(file=sys.stderr)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    # Rows whose features all cancelled (or had none) stay exactly zero.
    np.divide(out, norms, out=out, where=norms > 0)
    return out
