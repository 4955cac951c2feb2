"""Orbax checkpoints of a training run: `WORKDIR/checkpoints/{latest,best}`.

Each checkpoint holds `state` (the model and optimizer, a pure dict of arrays) and `meta` (JSON: step,
validation bookkeeping, the config, the item vocabularies; the input pipeline resumes from the step
alone). `latest` is for resuming; `best` is the best by the validation metric, for test evaluation and
serving. Orbax writes into a temporary directory and renames it when complete, so a process killed
mid-save leaves the previous checkpoint intact (and the temporary directory is cleaned up on the next
start).

A checkpoint that cannot be read (a truncated or corrupted file, a half-deleted directory) raises
`CheckpointReadError`, which names the step's directory. `restore_newest_intact` (resuming) warns,
moves such a step aside to `checkpoints/damaged/` and falls back to the newest readable one.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

KINDS = ("latest", "best")


class CheckpointReadError(Exception):
  """A checkpoint step that exists but cannot be read; `str()` names its directory and the cause."""

  def __init__(self, directory: Path, cause: BaseException):
    self.directory = Path(directory)
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    super().__init__(f"cannot read checkpoint {self.directory} ({type(cause).__name__}"
                     f"{': ' + reason[:300] if reason else ''})")


def _readable(directory: Path):
  """guard(fn) runs fn(), turning any failure to read `directory` into CheckpointReadError."""
  def guard(fn):
    try:
      return fn()
    except CheckpointReadError:
      raise
    except Exception as e:  # orbax / tensorstore / json raise many types for a damaged file
      raise CheckpointReadError(directory, e) from e
  return guard


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

  def step_dir(self, kind: str, step: int) -> Path:
    return Path(self.managers[kind].directory) / str(step)

  def restore_meta(self, step: int | None = None, kind: str = "best") -> dict | None:
    step = self._step(kind, step)
    if step is None:
      return None
    mgr = self.managers[kind]
    meta = _readable(self.step_dir(kind, step))(lambda: mgr.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    if not isinstance(meta, dict):
      raise CheckpointReadError(self.step_dir(kind, step), ValueError("meta is not an object"))
    return meta

  def restore_state(self, like_state: nnx.State, step: int | None = None,
                    kind: str = "best") -> nnx.State:
    """The state at `step` (default: the latest), filled into a copy of `like_state`'s structure."""
    step = self._step(kind, step)
    restored = _readable(self.step_dir(kind, step))(lambda: self.managers[kind].restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like_state)))))
    state = jax.tree.map(lambda x: x, like_state)
    nnx.replace_by_pure_dict(state, restored["state"])
    return state

  def restore_model_state(self, like_model_state: nnx.State, step: int | None = None,
                          kind: str = "best") -> nnx.State:
    """Only the model part (the first of the saved (model, optimizer) pair) at `step`, into a copy
    of `like_model_state`: serving needs no optimizer, so its state layout does not matter."""
    step = self._step(kind, step)
    item = {"0": _abstract(like_model_state)}
    args = ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(item))
    restored = _readable(self.step_dir(kind, step))(lambda: self.managers[kind].restore(
        step, args=ocp.args.Composite(state=args)))
    state = jax.tree.map(lambda x: x, like_model_state)
    nnx.replace_by_pure_dict(state, restored["state"]["0"])
    return state

  def set_aside(self, kind: str, step: int) -> Path:
    """Moves an unreadable step out of its manager to checkpoints/damaged/ (kept for inspection),
    so that the manager neither resumes from it nor skips saving that step again."""
    src = self.step_dir(kind, step)
    dest = src.parent.parent / "damaged" / f"{kind}-{step}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dest)
    self.managers[kind].reload()
    return dest

  def restore_newest_intact(self, like_state: nnx.State, check_meta=None,
                            kinds: tuple[str, ...] = KINDS) -> tuple[nnx.State, dict, str, int] | None:
    """(state, meta, kind, step) of the newest readable step of `kinds` (ties: the first kind);
    None when there is none. An unreadable step is logged as a warning, naming it, and set aside.
    `check_meta(meta, directory)` runs before the state is read (it may raise to stop the resume).
    """
    candidates = sorted(((step, -i, kind) for i, kind in enumerate(kinds)
                         for step in self.managers[kind].all_steps()), reverse=True)
    for step, _, kind in candidates:
      if step not in self.managers[kind].all_steps():  # set aside meanwhile
        continue
      try:
        meta = self.restore_meta(step, kind)
        if check_meta is not None:
          check_meta(meta, self.step_dir(kind, step))
        return self.restore_state(like_state, step, kind), meta, kind, step
      except CheckpointReadError as e:
        where = self.set_aside(kind, step) if jax.process_index() == 0 else None
        logging.warning("%s; resuming from an older checkpoint instead%s", e,
                        f" (moved to {where})" if where else "")
    return None

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
