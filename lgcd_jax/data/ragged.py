"""Ragged arrays: lists of variable-length sequences stored flat as (values, offsets).

Row i is values[offsets[i]:offsets[i + 1]], with offsets[0] = 0 and offsets[-1] = len(values). The
prepared dataset, the clue records and the batch pipeline all store their sequences this way; numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np


def offsets_from_lengths(lengths) -> np.ndarray:
  """[n] row lengths -> [n + 1] int64 offsets: 0, then their running sum."""
  lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
  offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
  np.cumsum(lengths, out=offsets[1:])
  return offsets


@dataclasses.dataclass(frozen=True)
class Ragged:
  """A list of int sequences stored flat: row i is values[offsets[i]:offsets[i+1]]."""

  values: np.ndarray
  offsets: np.ndarray

  @classmethod
  def from_lists(cls, seqs: Iterable[Sequence[int]]) -> "Ragged":
    seqs = [np.asarray(s, dtype=np.int32).reshape(-1) for s in seqs]
    offsets = offsets_from_lengths([len(s) for s in seqs])
    values = np.concatenate(seqs) if seqs else np.zeros(0, np.int32)
    return cls(values.astype(np.int32), offsets)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, i: int) -> np.ndarray:
    return self.values[self.offsets[i]:self.offsets[i + 1]]

  def __iter__(self):
    for i in range(len(self)):
      yield self[i]

  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def to_lists(self) -> list[list[int]]:
    return [row.tolist() for row in self]
