"""lgcd_jax/checkpoint.py on a small state: save / restore per kind, and a damaged step set aside."""

import logging
import shutil

import jax
import numpy as np
from flax import nnx

from lgcd_jax import checkpoint


def _state(seed: int) -> nnx.State:
  return nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(seed)))[1]


def _kernel(state: nnx.State) -> np.ndarray:
  return np.asarray(jax.device_get(nnx.to_pure_dict(state)["kernel"]))


def test_each_kind_restores_what_it_saved(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path)
  assert ckpt.restore("latest", _state(0)) is None and ckpt.restore_meta(kind="best") is None
  ckpt.save("best", 2, _state(1), {"step": 2})
  ckpt.save("latest", 3, _state(2), {"step": 3, "note": "newest"})
  ckpt.wait()
  assert ckpt.latest_step() == 3 and ckpt.latest_step("best") == 2
  state, meta = ckpt.restore("latest", _state(0))
  assert meta == {"step": 3, "note": "newest"}
  np.testing.assert_array_equal(_kernel(state), _kernel(_state(2)))
  np.testing.assert_array_equal(_kernel(ckpt.restore_state(_state(0), kind="best")), _kernel(_state(1)))
  ckpt.close()


def test_a_damaged_newest_step_is_set_aside_and_the_next_intact_one_restored(tmp_path, caplog):
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save("best", 2, _state(1), {"step": 2})
  ckpt.save("latest", 3, _state(2), {"step": 3})
  ckpt.wait()
  shutil.rmtree(ckpt.step_dir("latest", 3) / "state")
  with caplog.at_level(logging.WARNING):
    state, meta, kind, step = ckpt.restore_newest_intact(_state(0))
  assert (kind, step, meta) == ("best", 2, {"step": 2})
  np.testing.assert_array_equal(_kernel(state), _kernel(_state(1)))
  assert f"cannot read checkpoint {ckpt.step_dir('latest', 3)}" in caplog.text
  assert ckpt.latest_step() is None
  assert [p.name.split("-")[:2] for p in (tmp_path / "checkpoints" / "damaged").iterdir()] == [
      ["latest", "3"]]
  ckpt.close()
