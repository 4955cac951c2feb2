"""Inference: a batch of users -> scores over every target item, or their top-k. One home for it.

Training's evaluation (`train.evaluate_split`), serving (`recommend.Recommender`) and the benchmark
(`bench`) all call these, so they rank with the same computation and the same noise rule:
the reverse chain's noise of a user comes from `fold_in(sampling_key(seed), noise_id)` (its stable
per-user id, `user_keys`), so a user's output does not depend on its row, batch or neighbours.

`scores` and `top_k` are pure functions of a model (use them inside jit); `score_step` and
`top_k_step` are their compiled forms over an nnx (graphdef, state) pair, whose state is the model's
or the training (model, optimizer) pair's.

`top_k` can run a batch as a `lax.map` over micro-batches of users (`micro_batch`), sorted by
source length with each group cut to the width it needs (`group_widths`): the same users, keys and
results (each user's noise comes from its own noise_id), with working sets that stay in the cache
and no work on padding. On the CPU that is what bounds the sampler: the reverse chain re-reads every
cross-attention block's cached keys and values at each step (≈ 125 MB at batch 1024 and maxlen 50,
past a 32 MB L3), the source encoder's [batch, maxlen, 4d] activations spill as well, and a
Food-Kitchen history fills 8 of the 50 columns on average (BUILD_NOTES, issue 11, thirteenth
session). `default_grouping()` is the backend's measured choice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lgcd_jax import user_keys
from lgcd_jax.model import scoring
from lgcd_jax.model.lgcd import ItemFeatures

SAMPLE_SEED_OFFSET = 7919  # evaluation and serving draw their sampling noise from seed + this

# (micro_batch, group_widths) of `top_k` by backend; absent: the whole batch at once. Measured on
# the 2-core CPU at batch 1024 (BUILD_NOTES, issue 11, thirteenth session).
GROUP_WIDTHS = (4, 8, 16, 32)
DEFAULT_GROUPING = {"cpu": (256, GROUP_WIDTHS)}
# A group of at least this many users whose longest history needs the batch's full width runs as
# two halves, each cut to its own width (and a half as big as this again splits alike): the users
# are sorted by length, so the shorter half rarely needs the full width, and the encoder's
# attention grows with the width squared (a Food-Kitchen group of 256 spans 10 to 50 items;
# BUILD_NOTES, issue 11, fifteenth session).
SPLIT_WIDEST_MIN = 256


def default_grouping() -> tuple[int | None, tuple[int, ...]]:
  """(micro_batch, group_widths) of `top_k` for JAX's default backend ((None, ()): none)."""
  return DEFAULT_GROUPING.get(jax.default_backend(), (None, ()))


def sampling_key(seed: int) -> jax.Array:
  """The key a run's evaluation and serving draw every user's sampling noise from."""
  return jax.random.key(int(seed) + SAMPLE_SEED_OFFSET)


def scores(model, batch: dict, key: jax.Array, sampler: str, steps: int) -> jax.Array:
  """[B, num_target_items] scores: conditions -> guess -> reverse chain -> <x0_hat, e_i> (+ b_i)."""
  return model.score(model.sample(batch, user_keys.batch_keys(key, batch), sampler, steps))


def top_k(model, batch: dict, key: jax.Array, sampler: str, steps: int, k: int,
          chunk: int | None = scoring.DEFAULT_CHUNK, micro_batch: int | None = None,
          group_widths: tuple[int, ...] = (), feats: ItemFeatures | None = None
          ) -> tuple[jax.Array, jax.Array]:
  """([B, k] scores, [B, k] 0-based items) of `scores`, streamed over item chunks (chunk=None: all
  items at once, then `lax.top_k`).

  micro_batch: run the users in a `lax.map` over groups of this many (the last padded with copies
  of its last row, which are dropped); None, or a batch without per-user noise ("noise_id"), whose
  noise a split would change: all at once. group_widths (with micro_batch): sort the users by
  source length first and cut each group's src to the smallest of these widths that holds it (one
  `lax.switch` branch per width), as `pipeline.length_sorted_batches` cuts host batches: the
  columns cut are padding, so only the work changes (the encoder masks padding). A group of at
  least SPLIT_WIDEST_MIN users (even) that needs the full width runs as two halves, each cut (and
  split) alike.

  feats: the model's `item_features()`, when the caller has them (a server computes them once per
  checkpoint); else a grouped batch computes them once for all its groups.
  """
  size, length = batch["src"].shape
  if not micro_batch or micro_batch >= size or "noise_id" not in batch:
    return model.top_k(model.sample(batch, user_keys.batch_keys(key, batch), sampler, steps,
                                    feats=feats), k, chunk, None if feats is None else feats.tgt)
  # Every group scores the whole catalogue and looks up its source and clue items: project the
  # title tables once, outside the loop.
  if feats is None:
    feats = model.item_features()

  def run(b):
    x0_hat = model.sample(b, user_keys.batch_keys(key, b), sampler, steps, feats=feats)
    return model.top_k(x0_hat, k, chunk, feats.tgt)
  widths = group_buckets(group_widths, length)
  order = None
  if len(widths) > 1:
    order = jnp.argsort(_needed_width(batch["src"]), stable=True)
    batch = jax.tree.map(lambda a: a[order], batch)
  groups = -(-size // micro_batch)
  pad = groups * micro_batch - size

  def split(a):
    if pad:
      a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
    return a.reshape((groups, micro_batch) + a.shape[1:])

  at_width = [functools.partial(lambda b, w: run({**b, "src": b["src"][:, length - w:]}), w=w)
               for w in widths]

  def group_fn(users: int):
    """One group of `users` sorted users, at the smallest width that holds its longest history; a
    group of at least SPLIT_WIDEST_MIN that needs the full width runs as two halves, each alike."""
    branches = list(at_width)
    if users >= SPLIT_WIDEST_MIN and users % 2 == 0:
      half = group_fn(users // 2)

      def run_halves(b):  # sorted users: the first half is the shorter one
        halves = jax.tree.map(lambda a: a.reshape((2, users // 2) + a.shape[1:]), b)
        out = jax.lax.map(half, halves)
        return jax.tree.map(lambda a: a.reshape((users,) + a.shape[2:]), out)
      branches[-1] = run_halves

    def run_cut(b):
      need = jnp.max(_needed_width(b["src"]))
      return jax.lax.switch(jnp.searchsorted(jnp.asarray(widths), need), branches, b)
    return run_cut
  out = jax.lax.map(run if len(widths) == 1 else group_fn(micro_batch), jax.tree.map(split, batch))
  out = jax.tree.map(lambda a: a.reshape((groups * micro_batch,) + a.shape[2:])[:size], out)
  if order is not None:  # back to the batch's rows
    out = jax.tree.map(lambda a: jnp.zeros_like(a).at[order].set(a), out)
  return out


def group_buckets(group_widths, length: int) -> list[int]:
  """The widths `top_k` cuts groups of a `length`-wide batch to: group_widths below length, sorted,
  then length itself (which holds every row)."""
  return sorted({int(w) for w in group_widths if 0 < int(w) < length} | {int(length)})


def _needed_width(src: jax.Array) -> jax.Array:
  """[B] trailing columns holding each left-padded row's items (`pipeline.needed_width` in jnp)."""
  return jnp.sum(jnp.cumsum(src != 0, axis=1) > 0, axis=1)


def _model(graphdef, state):
  merged = nnx.merge(graphdef, state)
  return merged[0] if isinstance(merged, tuple) else merged  # training states are (model, optimizer)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def score_step(graphdef, state, batch, sampler, steps, key):
  """`scores` of the model in (graphdef, state): one compiled function."""
  return scores(_model(graphdef, state), batch, key, sampler, steps)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6, 7, 8, 9))
def top_k_step(graphdef, state, batch, sampler, steps, key, k, chunk=scoring.DEFAULT_CHUNK,
               micro_batch=None, group_widths=(), feats=None):
  """`top_k` of the model in (graphdef, state): one compiled function."""
  return top_k(_model(graphdef, state), batch, key, sampler, steps, k, chunk, micro_batch,
               group_widths, feats)


@functools.partial(jax.jit, static_argnums=0)
def item_features_step(graphdef, state) -> ItemFeatures:
  """`LGCD.item_features` of the model in (graphdef, state): both item tables projected, for a
  caller that keeps them as long as the weights (a server, the bench)."""
  return _model(graphdef, state).item_features()
