"""Orbax checkpoints of a training run: `WORKDIR/checkpoints/{latest,best}`.

Each checkpoint holds `state` (the model and optimizer, a pure dict of arrays) and `meta` (JSON: step,
input-pipeline position, validation bookkeeping, the config, the item vocabularies). `latest` is for
resuming; `best` is the best by the validation metric, for test evaluation and serving. Orbax writes into a
temporary directory and renames it when complete, so a process killed mid-save leaves the previous
checkpoint intact (and the temporary directory is cleaned up on the next start).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

KINDS = ("latest", "best")


def _abstract(state: nnx.State):
  """Restore targets shaped like `state`: its sharding for jax arrays, host numpy otherwise."""
  def leaf(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return np.zeros(x.shape, x.dtype)
  return jax.tree.map(leaf, nnx.to_pure_dict(state))


class Checkpointer:

  def __init__(self, workdir: str | Path | None, managers: dict | None = None):
    if managers is not None:
      self.managers = managers
      return
    root = Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           cleanup_tmp_directories=True)
    self.managers = {k: ocp.CheckpointManager(root / k, options=options) for k in KINDS}

  @classmethod
  def for_directory(cls, directory: str | Path) -> "Checkpointer":
    """A read-only view of one manager directory (e.g. WORKDIR/checkpoints/best), as kind "best"."""
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    return cls(None, {"best": ocp.CheckpointManager(Path(directory).absolute(), options=options)})

  def _step(self, kind: str, step: int | None) -> int | None:
    return self.managers[kind].latest_step() if step is None else step

  def restore_meta(self, step: int | None = None, kind: str = "best") -> dict | None:
    step = self._step(kind, step)
    if step is None:
      return None
    mgr = self.managers[kind]
    return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore_state(self, like_state: nnx.State, step: int | None = None,
                    kind: str = "best") -> nnx.State:
    """The state at `step` (default: the latest), filled into a copy of `like_state`'s structure."""
    restored = self.managers[kind].restore(self._step(kind, step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(like_state))))
    state = jax.tree.map(lambda x: x, like_state)
    nnx.replace_by_pure_dict(state, restored["state"])
    return state

  def latest_step(self, kind: str = "latest") -> int | None:
    return self.managers[kind].latest_step()

  def save(self, kind: str, step: int, state: nnx.State, meta: dict) -> None:
    mgr = self.managers[kind]
    # One save in flight at a time, across managers: orbax names its cross-process barriers by step,
    # so `best` and `latest` saving the same step concurrently would wait on each other's barrier.
    self.wait()
    if step in mgr.all_steps():  # a resumed run reaching the same step saves the same state
      return
    # Fresh buffers: the state's own are donated to the next train step while orbax writes. Global
    # jax arrays (not host numpy) let orbax write a replicated array once across processes.
    pure = jax.tree.map(jnp.copy, nnx.to_pure_dict(state))
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(pure),
                                           meta=ocp.args.JsonSave(meta)))

  def restore(self, kind: str, like_state: nnx.State, step: int | None = None
              ) -> tuple[nnx.State, dict] | None:
    """(state, meta) at `step` (default: the latest); None when there is no checkpoint."""
    step = self._step(kind, step)
    if step is None:
      return None
    return self.restore_state(like_state, step, kind), self.restore_meta(step, kind)

  def wait(self) -> None:
    for mgr in self.managers.values():
      mgr.wait_until_finished()

  def close(self) -> None:
    for mgr in self.managers.values():
      mgr.close()
