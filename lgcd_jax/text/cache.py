"""Item-title embeddings, computed once per (domain, encoder, catalogue) and cached on disk.

The cache file is `<cache_dir>/<domain>-<encoder.name>-<key>.npy`, where `cache_dir` defaults to
`<prepared dataset>/embeddings` and `key` is the first 16 hex digits of the SHA-256 of the domain's titles
(JSON-encoded as a list, so that no two different title lists share a key). Changing a title, the encoder
or its dimension therefore reads or writes another file. A cached file that cannot be read, or whose shape
is not [num_items, encoder.dim], is recomputed and replaced. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from lgcd_jax.data import atomic
from lgcd_jax.data.prepared import DOMAINS, PreparedDataset


def titles_key(titles: list[str]) -> str:
  """First 16 hex digits of the SHA-256 of the titles (JSON list: unambiguous joining)."""
  blob = json.dumps([str(t) for t in titles], ensure_ascii=False).encode("utf-8")
  return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(ds: PreparedDataset, domain: str, encoder,
               cache_dir: str | os.PathLike | None = None) -> Path | None:
  """Where the embeddings of `domain` live; None when there is nowhere to cache them."""
  if cache_dir is None:
    if ds.path is None:
      return None
    cache_dir = Path(ds.path) / "embeddings"
  return Path(cache_dir) / f"{domain}-{encoder.name}-{titles_key(ds.titles[domain])}.npy"


def _read(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
  """The cached array, or None when it is missing, unreadable or of the wrong shape."""
  if not path.exists():
    return None
  try:
    arr = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError):
    return None
  if arr.shape != shape or not np.all(np.isfinite(arr)):
    return None
  return arr.astype(np.float32, copy=False)


def title_embeddings(ds: PreparedDataset, domain: str, encoder,
                     cache_dir: str | os.PathLike | None = None, progress: bool = False) -> np.ndarray:
  """float32 [num_items(domain), encoder.dim]: row i embeds the title of item i."""
  if domain not in DOMAINS:
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
  titles = list(ds.titles[domain])
  shape = (len(titles), int(encoder.dim))
  path = cache_path(ds, domain, encoder, cache_dir)
  if path is not None:
    cached = _read(path, shape)
    if cached is not None:
      return cached
  emb = np.asarray(encoder.encode(titles, progress=progress), np.float32)
  if emb.shape != shape:
    raise ValueError(f"encoder {encoder.name} returned shape {emb.shape}, expected {shape}")
  if path is not None:
    buf = io.BytesIO()
    np.save(buf, emb, allow_pickle=False)
    atomic.atomic_write_bytes(path, buf.getvalue())
  return emb
