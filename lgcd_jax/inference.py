"""Inference: a batch of users -> scores over every target item, or their top-k. One home for it.

Training's evaluation (`train.evaluate_split`), serving (`recommend.Recommender`) and the benchmark
(`bench`) all call these, so they rank with the same computation and the same noise rule:
the reverse chain's noise of a user comes from `fold_in(sampling_key(seed), noise_id)` (its stable
per-user id, `user_keys`), so a user's output does not depend on its row, batch or neighbours.

`scores` and `top_k` are pure functions of a model (use them inside jit); `score_step` and
`top_k_step` are their compiled forms over an nnx (graphdef, state) pair, whose state is the model's
or the training (model, optimizer) pair's.

`top_k` can run a batch as a `lax.map` over micro-batches of users (`micro_batch`): the same
users, keys and results (each user's noise comes from its own noise_id), with working sets that
stay in the cache. On the CPU that is what bounds the sampler: the reverse chain re-reads every
cross-attention block's cached keys and values at each step (≈ 125 MB at batch 1024 and maxlen 50,
past a 32 MB L3), and the source encoder's [batch, maxlen, 4d] activations spill as well (BUILD_NOTES, issue
11, thirteenth session). `default_micro_batch()` is the backend's measured choice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lgcd_jax import user_keys
from lgcd_jax.model import scoring

SAMPLE_SEED_OFFSET = 7919  # evaluation and serving draw their sampling noise from seed + this

# Users per micro-batch of `top_k` by backend (none: the whole batch at once). On the 2-core CPU
# at batch 1024, 128 was the fastest of 32 / 64 / 128 / 256 / whole (BUILD_NOTES, issue 11).
DEFAULT_MICRO_BATCH = {"cpu": 128}


def default_micro_batch() -> int | None:
  """The measured micro-batch of `top_k` for JAX's default backend (None: the whole batch)."""
  return DEFAULT_MICRO_BATCH.get(jax.default_backend())


def sampling_key(seed: int) -> jax.Array:
  """The key a run's evaluation and serving draw every user's sampling noise from."""
  return jax.random.key(int(seed) + SAMPLE_SEED_OFFSET)


def scores(model, batch: dict, key: jax.Array, sampler: str, steps: int) -> jax.Array:
  """[B, num_target_items] scores: conditions -> guess -> reverse chain -> <x0_hat, e_i> (+ b_i)."""
  return model.score(model.sample(batch, user_keys.batch_keys(key, batch), sampler, steps))


def top_k(model, batch: dict, key: jax.Array, sampler: str, steps: int, k: int,
          chunk: int | None = scoring.DEFAULT_CHUNK, micro_batch: int | None = None
          ) -> tuple[jax.Array, jax.Array]:
  """([B, k] scores, [B, k] 0-based items) of `scores`, streamed over item chunks (chunk=None: all
  items at once, then `lax.top_k`). micro_batch: run the users in a `lax.map` over groups of this
  many (the last padded with copies of its last row, which are dropped); None, or a batch without
  per-user noise ("noise_id"), whose noise a split would change: all at once."""
  def run(b):
    return model.top_k(model.sample(b, user_keys.batch_keys(key, b), sampler, steps), k, chunk)
  size = batch["src"].shape[0]
  if not micro_batch or micro_batch >= size or "noise_id" not in batch:
    return run(batch)
  groups = -(-size // micro_batch)
  pad = groups * micro_batch - size

  def split(a):
    if pad:
      a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
    return a.reshape((groups, micro_batch) + a.shape[1:])
  out = jax.lax.map(run, jax.tree.map(split, batch))
  return jax.tree.map(lambda a: a.reshape((groups * micro_batch,) + a.shape[2:])[:size], out)


def _model(graphdef, state):
  merged = nnx.merge(graphdef, state)
  return merged[0] if isinstance(merged, tuple) else merged  # training states are (model, optimizer)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def score_step(graphdef, state, batch, sampler, steps, key):
  """`scores` of the model in (graphdef, state): one compiled function."""
  return scores(_model(graphdef, state), batch, key, sampler, steps)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6, 7, 8))
def top_k_step(graphdef, state, batch, sampler, steps, key, k, chunk=scoring.DEFAULT_CHUNK,
               micro_batch=None):
  """`top_k` of the model in (graphdef, state): one compiled function."""
  return top_k(_model(graphdef, state), batch, key, sampler, steps, k, chunk, micro_batch)
