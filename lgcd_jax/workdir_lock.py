"""One process per output directory: an OS lock (fcntl.flock) that the kernel releases when its holder
exits, however it exits, so a lock left by a killed process never blocks.

  workdir_lock.acquire(workdir, "workdir")        # main.py; held until the process ends
  workdir_lock.acquire(out, "--out")              # pipelines.pseudo_overlap
  workdir_lock.acquire(output, "--output", beside=True)   # lgcd_jax.data.prepare (renamed into place)

A second process asking for a held directory gets a `Locked` error (a cli.UserError) naming the
holder's PID, at once. The lock file is DIR/.lock, or DIR's sibling .DIR.lock with `beside=True`
(for a directory that is built elsewhere and renamed into place; `prepare` removes it when done); it
holds the holder's PID.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lgcd_jax.cli import UserError

_HELD: dict[str, int] = {}  # lock file -> open descriptor, for the life of the process


class Locked(UserError):
  pass


def lock_path(directory: str | os.PathLike, beside: bool = False) -> Path:
  directory = Path(directory).absolute()
  return directory.parent / f".{directory.name}.lock" if beside else directory / ".lock"


def acquire(directory: str | os.PathLike, what: str = "directory", beside: bool = False) -> Path:
  """Locks `directory` for this process (idempotent); raises Locked if another process holds it."""
  path = lock_path(directory, beside)
  key = str(path)
  if key in _HELD:
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
      holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
      os.close(fd)
      raise Locked(f"{what} {directory} is in use by another process (PID {holder}); wait for "
                   f"it to finish or stop it, or use another {what}") from None
    try:  # the file may have been removed (release(remove=True)) between open and flock
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
  _HELD[key] = fd
  return path


def release(directory: str | os.PathLike, beside: bool = False, remove: bool = False) -> None:
  """Releases a lock this process holds (exiting releases it too); remove=True also deletes the
  lock file (safe: `acquire` checks that the file it locked is still the one at the path)."""
  path = lock_path(directory, beside)
  fd = _HELD.pop(str(path), None)
  if fd is not None:
    if remove:
      try:
        os.unlink(path)
      except FileNotFoundError:
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
