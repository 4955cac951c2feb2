"""Tie-aware ranking metrics (DESIGN.md §3), pure and jittable.

rank = (# candidates scoring strictly higher than the positive) + 0.5 * (# other candidates tied with it),
0-based. So a model that gives every item the same score ranks each positive in the middle and scores
near zero, never perfectly. HR@K = 1[rank < K], NDCG@K = 1[rank < K] / log2(rank + 2), MRR = 1 / (rank + 1).

The ranks assume finite scores: a NaN compares false with everything, so a NaN positive would rank
-0.5 (better than first) and score a perfect HR and an NDCG above 1. `nonfinite_rows` finds such rows
so that the evaluator can refuse them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

HR_KS = (1, 5, 10)
NDCG_KS = (5, 10)
METRIC_NAMES = tuple([f"HR@{k}" for k in HR_KS] + [f"NDCG@{k}" for k in NDCG_KS] + ["MRR"])


def rank_among(pos_score: jax.Array, cand_scores: jax.Array) -> jax.Array:
  """pos_score [B], cand_scores [B, N] (the positive not among them) -> tie-aware 0-based rank [B]."""
  pos = pos_score[:, None]
  higher = jnp.sum(cand_scores > pos, axis=-1)
  ties = jnp.sum(cand_scores == pos, axis=-1)
  return higher.astype(jnp.float32) + 0.5 * ties.astype(jnp.float32)


def full_ranks(scores: jax.Array, label: jax.Array) -> jax.Array:
  """Rank of `label` among all items: scores [B, N], label [B] 0-based."""
  pos = jnp.take_along_axis(scores, label[:, None], axis=-1)[:, 0]
  higher = jnp.sum(scores > pos[:, None], axis=-1)
  ties = jnp.sum(scores == pos[:, None], axis=-1) - 1  # the positive ties with itself
  return higher.astype(jnp.float32) + 0.5 * ties.astype(jnp.float32)


def sampled_ranks(scores: jax.Array, label: jax.Array, negatives: jax.Array) -> jax.Array:
  """Rank of `label` among itself + its fixed negatives [B, K]."""
  pos = jnp.take_along_axis(scores, label[:, None], axis=-1)[:, 0]
  neg = jnp.take_along_axis(scores, negatives, axis=-1)
  return rank_among(pos, neg)


def metrics_from_ranks(rank: jax.Array) -> dict[str, jax.Array]:
  """Per-user metric values [B] for each name in METRIC_NAMES."""
  out = {}
  for k in HR_KS:
    out[f"HR@{k}"] = (rank < k).astype(jnp.float32)
  for k in NDCG_KS:
    out[f"NDCG@{k}"] = jnp.where(rank < k, 1.0 / jnp.log2(rank + 2.0), 0.0)
  out["MRR"] = 1.0 / (rank + 1.0)
  return out


@jax.jit
def batch_metric_sums(scores: jax.Array, label: jax.Array, negatives: jax.Array,
                      weight: jax.Array) -> dict[str, dict[str, jax.Array]]:
  """Weighted sums over a batch for both protocols; padding rows have weight 0."""
  out = {}
  for name, rank in (("full", full_ranks(scores, label)),
                     ("sampled", sampled_ranks(scores, label, negatives))):
    out[name] = {k: jnp.sum(v * weight) for k, v in metrics_from_ranks(rank).items()}
  return out


@jax.jit
def nonfinite_rows(scores: jax.Array, weight: jax.Array, user: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """(number of real rows (weight > 0) with any non-finite score, the smallest `user` among them).

  The second value is the int32 maximum when there is none. Both are scalars, so they can be read back
  from a batch sharded over several hosts.
  """
  bad = (weight > 0) & ~jnp.all(jnp.isfinite(scores), axis=-1)
  first = jnp.min(jnp.where(bad, user.astype(jnp.int32), jnp.iinfo(jnp.int32).max))
  return jnp.sum(bad.astype(jnp.int32)), first


# Source-history length buckets (issue 12): lower bounds and names. A user's length is the number of
# source items the model sees (the last data.maxlen of the history; every bucket is exact for
# maxlen >= 8). "0-1" holds one-item histories, and the rare eval user with none (the raw Amazon path
# can leave one without a source item; Food-Kitchen has none), so that "2-3" is exactly 2-3 items.
SOURCE_LENGTH_EDGES = (0, 2, 4, 8)
SOURCE_LENGTH_BUCKETS = ("0-1", "2-3", "4-7", "8+")


def source_length_bucket(src: jax.Array) -> jax.Array:
  """src [B, L] (items+1, 0 = padding) -> bucket index [B] into SOURCE_LENGTH_BUCKETS."""
  length = jnp.sum(src > 0, axis=-1)
  return jnp.sum(length[:, None] >= jnp.asarray(SOURCE_LENGTH_EDGES[1:]), axis=-1)


@jax.jit
def bucket_metric_sums(scores: jax.Array, label: jax.Array, negatives: jax.Array,
                       weight: jax.Array, src: jax.Array) -> dict:
  """Like `batch_metric_sums`, per source-length bucket: {"count": [nb], proto: {metric: [nb]}}."""
  nb = len(SOURCE_LENGTH_BUCKETS)
  member = jax.nn.one_hot(source_length_bucket(src), nb, dtype=jnp.float32) * weight[:, None]
  out = {"count": jnp.sum(member, axis=0)}
  for name, rank in (("full", full_ranks(scores, label)),
                     ("sampled", sampled_ranks(scores, label, negatives))):
    out[name] = {k: v @ member for k, v in metrics_from_ranks(rank).items()}
  return out
