"""The background batch prefetcher: the same items in order, errors at their step, a clean stop."""

import threading
import time

import pytest

from lgcd_jax.data.prefetch import Prefetcher


def test_yields_every_step_in_order_and_runs_ahead():
  made = []

  def make(step):
    made.append(step)
    return {"step": step}

  with Prefetcher(make, 3, 9, depth=2) as batches:
    seen = []
    for step, batch in batches:
      if step == 3:
        time.sleep(0.3)  # the consumer is busy: the thread makes the next ones meanwhile
        assert len(made) >= 3
      assert batch == {"step": step}
      seen.append(step)
  assert seen == list(range(3, 9))


def test_an_error_in_make_is_raised_at_its_step():
  def make(step):
    if step == 2:
      raise ValueError("bad batch 2")
    return step

  got = []
  with pytest.raises(ValueError, match="bad batch 2"):
    with Prefetcher(make, 0, 5) as batches:
      for step, _ in batches:
        got.append(step)
  assert got == [0, 1]


def test_close_stops_the_thread_when_the_consumer_leaves_early():
  before = threading.active_count()
  with Prefetcher(lambda step: step, 0, 10**9, depth=3) as batches:
    for step, _ in batches:
      if step == 5:
        break
  time.sleep(0.2)
  assert threading.active_count() <= before
  with pytest.raises(ValueError):
    Prefetcher(lambda s: s, 0, 1, depth=0)
