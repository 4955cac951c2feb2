"""Inference: a batch of users -> scores over every target item, or their top-k. One home for it.

Training's evaluation (`train.evaluate_split`), serving (`recommend.Recommender`) and the benchmark
(`bench`) all call these, so they rank with the same computation and the same noise rule:
the reverse chain's noise of a user comes from `fold_in(sampling_key(seed), noise_id)` (its stable
per-user id, `user_keys`), so a user's output does not depend on its row, batch or neighbours.

`scores` and `top_k` are pure functions of a model (use them inside jit); `score_step` and
`top_k_step` are their compiled forms over an nnx (graphdef, state) pair, whose state is the model's
or the training (model, optimizer) pair's.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx

from lgcd_jax import user_keys
from lgcd_jax.model import scoring

SAMPLE_SEED_OFFSET = 7919  # evaluation and serving draw their sampling noise from seed + this


def sampling_key(seed: int) -> jax.Array:
  """The key a run's evaluation and serving draw every user's sampling noise from."""
  return jax.random.key(int(seed) + SAMPLE_SEED_OFFSET)


def scores(model, batch: dict, key: jax.Array, sampler: str, steps: int) -> jax.Array:
  """[B, num_target_items] scores: conditions -> guess -> reverse chain -> <x0_hat, e_i> (+ b_i)."""
  return model.score(model.sample(batch, user_keys.batch_keys(key, batch), sampler, steps))


def top_k(model, batch: dict, key: jax.Array, sampler: str, steps: int, k: int,
          chunk: int | None = scoring.DEFAULT_CHUNK) -> tuple[jax.Array, jax.Array]:
  """([B, k] scores, [B, k] 0-based items) of `scores`, streamed over item chunks (chunk=None: all
  items at once, then `lax.top_k`)."""
  x0_hat = model.sample(batch, user_keys.batch_keys(key, batch), sampler, steps)
  return model.top_k(x0_hat, k, chunk)


def _model(graphdef, state):
  merged = nnx.merge(graphdef, state)
  return merged[0] if isinstance(merged, tuple) else merged  # training states are (model, optimizer)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def score_step(graphdef, state, batch, sampler, steps, key):
  """`scores` of the model in (graphdef, state): one compiled function."""
  return scores(_model(graphdef, state), batch, key, sampler, steps)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6, 7))
def top_k_step(graphdef, state, batch, sampler, steps, key, k, chunk=scoring.DEFAULT_CHUNK):
  """`top_k` of the model in (graphdef, state): one compiled function."""
  return top_k(_model(graphdef, state), batch, key, sampler, steps, k, chunk)
