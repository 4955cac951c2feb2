"""Shared fixtures. Tests run on the CPU; a few use several fake CPU devices in a subprocess."""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests (and their subprocesses, which inherit this) compile the same tiny programs: a persistent
# compilation cache turns every compile after the first into a disk read.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "lgcd_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def food_kitchen_dir():
  path = SHARED_DATA / "food-kitchen"
  if not (path / "num.txt").exists():
    pytest.skip("the Food-Kitchen release is not at ../shared/data/food-kitchen")
  return path


@pytest.fixture(scope="session")
def food_kitchen_prepared(food_kitchen_dir, tmp_path_factory):
  from lgcd_jax.data import llmcdsr, prepared
  raw, _ = llmcdsr.build_llmcdsr(food_kitchen_dir)
  out = tmp_path_factory.mktemp("fk") / "prepared"
  prepared.write_prepared(raw, out, source="llmcdsr", arguments={"input": str(food_kitchen_dir)})
  return prepared.load_prepared(out)


def tiny_config(**overrides):
  """configs/tiny.py with dotted overrides, e.g. tiny_config(**{"train.steps": 20})."""
  from configs import tiny
  c = tiny.get_config().unlock()
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c.lock()


TRAINED_TINY_OVERRIDES = {"train.steps": 20}


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
  """One finished tiny LGCD run (20 encoder + 20 diffusion steps), shared by the tests that only read
  it (results, checkpoints, serving, benchmarking). Copy it before changing it."""
  from lgcd_jax import experiment
  workdir = tmp_path_factory.mktemp("trained_tiny")
  results = experiment.run(tiny_config(**TRAINED_TINY_OVERRIDES), workdir)
  return workdir, results
