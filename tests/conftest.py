"""Shared fixtures. Tests run on the CPU; a few use several fake CPU devices in a subprocess."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
