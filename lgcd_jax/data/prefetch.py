"""Batches made ahead of the device: a background thread runs `make(step)` for the coming steps.

The training loop's batches are pure functions of the step, so making them on another thread changes
nothing but when they are ready: while the device runs step i, the host assembles (and transfers) the
batches of steps i+1 .. i+depth. An exception in `make` is raised by the consumer at the step it
belongs to; `close()` (or leaving the `with` block, e.g. on an early stop) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator


class Prefetcher:
  """Iterates `make(step)` for step in [start, stop), computed up to `depth` steps ahead."""

  _END = object()

  def __init__(self, make: Callable[[int], object], start: int, stop: int, depth: int = 2):
    if depth < 1:
      raise ValueError(f"depth must be >= 1, got {depth}")
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, args=(make, start, stop), daemon=True,
                                    name="batch-prefetch")
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _fill(self, make, start: int, stop: int) -> None:
    for step in range(start, stop):
      try:
        item = (step, make(step), None)
      except BaseException as e:  # handed to the consumer, raised at this step
        self._put((step, None, e))
        return
      if not self._put(item):
        return
    self._put(self._END)

  def __iter__(self) -> Iterator[tuple[int, object]]:
    while True:
      item = self._queue.get()
      if item is self._END:
        return
      step, value, error = item
      if error is not None:
        raise error
      yield step, value

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=10)

  def __enter__(self) -> "Prefetcher":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
