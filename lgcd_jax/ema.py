"""An exponential moving average of the weights (train.ema_decay), kept in the optimizer's state.

Keeping it inside the optimizer (`track`, the last link of the optax chain) means it is checkpointed,
restored, sharded and resumed with everything else: a resumed run's average equals an uninterrupted
one's. The average's decay warms up as (1 + n) / (10 + n) over the first updates, so the early
average is not dominated by the initial weights.

Evaluation and serving read the average: `swap` exchanges the model's parameters with it. Swapping
twice gives the original state back, which is how a `best` checkpoint is kept: it holds the
averaged model in its model part (what was evaluated, and what serving reads) and the raw weights
in the average's slot, and a run that resumes from it swaps them back (meta `ema_in_model`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class EmaState(NamedTuple):
  count: jax.Array
  ema: optax.Params


def warmup_decay(decay: float, count: jax.Array) -> jax.Array:
  """The decay of update `count` (0-based): min(decay, (1 + count) / (10 + count))."""
  n = count.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def track(decay: float) -> optax.GradientTransformation:
  """An optax link that leaves the updates alone and averages the parameters they produce."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f"train.ema_decay must be in (0, 1) (0 turns the average off); got {decay}")

  def init(params):
    # Copies: the average must not share buffers with the weights a donated train step consumes.
    return EmaState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("ema.track needs the parameters (optimizer.update passes them)")
    d = warmup_decay(decay, state.count)
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p.astype(e.dtype), state.ema, new)
    return updates, EmaState(state.count + 1, ema)

  return optax.GradientTransformation(init, update)


def _ema_path(state: nnx.State) -> tuple | None:
  """The keys, inside a (model, optimizer) state's `opt_state`, of the EmaState; None if absent.

  nnx turns the optax state into nested States keyed by the chain's positions and the named
  tuple's fields, so the average is the node whose keys are exactly EmaState's fields."""
  found = []

  def find(path, node):
    if isinstance(node, (nnx.State, dict)):
      if set(node.keys()) == set(EmaState._fields):
        found.append(path)
        return
      for k, v in node.items():
        find(path + (k,), v)

  find((), state[1]["opt_state"])
  if len(found) > 1:
    raise ValueError(f"more than one weight average in the optimizer state: {found}")
  return found[0] if found else None


def has_average(state: nnx.State) -> bool:
  return _ema_path(state) is not None


def swap(state: nnx.State) -> nnx.State:
  """The (model, optimizer) state with the model's parameters and their average exchanged (a new
  state; the input is not changed). A state without an average is returned as it is."""
  path = _ema_path(state)
  if path is None:
    return state
  pure = nnx.to_pure_dict(state)
  node = pure[1]["opt_state"]
  for k in path:
    node = node[k]
  average = node["ema"]
  node["ema"] = _exchange(pure[0], average)
  out = jax.tree.map(lambda x: x, state)
  nnx.replace_by_pure_dict(out, pure)
  return out


def _exchange(model: dict, values: dict) -> dict:
  """Puts `values` into `model` at their paths (in place) and returns what was there."""
  old = {}
  for k, v in values.items():
    if isinstance(v, dict):
      old[k] = _exchange(model[k], v)
    else:
      old[k], model[k] = model[k], v
  return old
