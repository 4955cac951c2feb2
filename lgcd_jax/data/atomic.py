"""Atomic writes: a crash never leaves a half-written file or directory where a finished one belongs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False):
  """Yields a fresh temporary directory next to `final`; renames it into place only on success.

  On any exception the temporary directory is removed and `final` is untouched.
  """
  final = Path(final)
  if final.exists() and not overwrite:
    raise FileExistsError(f"{final} already exists (pass --overwrite to replace it)")
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
  try:
    yield tmp
    if final.exists() and overwrite:
      # Two renames; the old copy is only deleted once the new one is in place.
      trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
      os.rename(final, trash / "old")
      os.rename(tmp, final)
      shutil.rmtree(trash, ignore_errors=True)
    else:
      # Without overwrite a copy that another process finished meanwhile is kept as it is: it may
      # already be in use (hosts of one run prepare the same synthetic data), and moving it aside
      # would pull it from under its reader. The rename of a directory onto a non-empty one fails.
      try:
        os.rename(tmp, final)
      except OSError:
        if final.exists():  # another process finished the same directory first
          raise FileExistsError(f"{final} already exists") from None
        raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
  """Yields a file open for writing next to `path`; on success it is flushed, synced and renamed onto
  `path`, on any exception it is removed and `path` is untouched (for output written as it streams)."""
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, mode, encoding=None if mode == "wb" else encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
  atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")
