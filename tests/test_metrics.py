import math

import jax.numpy as jnp
import numpy as np
import pytest

from lgcd_jax.evaluation import metrics


def test_ranks_by_hand():
  scores = jnp.array([[0.1, 0.9, 0.5, 0.5, 0.2],
                      [3.0, 1.0, 2.0, 0.0, -1.0]])
  label = jnp.array([2, 0])
  # user 0: item 2 scores 0.5: one higher (0.9), one tie (item 3) -> rank 1.5; user 1: top -> 0.
  np.testing.assert_allclose(metrics.full_ranks(scores, label), [1.5, 0.0])
  negatives = jnp.array([[0, 4], [1, 2]])
  np.testing.assert_allclose(metrics.sampled_ranks(scores, label, negatives), [0.0, 0.0])
  negatives = jnp.array([[1, 3], [1, 2]])
  np.testing.assert_allclose(metrics.sampled_ranks(scores, label, negatives), [1.5, 0.0])


def test_metric_values_by_hand():
  rank = jnp.array([0.0, 1.5, 4.0, 5.0, 9.5, 20.0])
  m = {k: np.asarray(v) for k, v in metrics.metrics_from_ranks(rank).items()}
  np.testing.assert_allclose(m["HR@1"], [1, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(m["HR@5"], [1, 1, 1, 0, 0, 0])
  np.testing.assert_allclose(m["HR@10"], [1, 1, 1, 1, 1, 0])
  np.testing.assert_allclose(m["NDCG@5"], [1, 1 / math.log2(3.5), 1 / math.log2(6), 0, 0, 0],
                             rtol=1e-6)
  np.testing.assert_allclose(m["NDCG@10"][3:], [1 / math.log2(7), 1 / math.log2(11.5), 0], rtol=1e-6)
  np.testing.assert_allclose(m["MRR"], 1 / (np.asarray(rank) + 1), rtol=1e-6)


def test_all_ties_score_near_chance_not_perfect():
  n_items, b = 1000, 64
  scores = jnp.zeros((b, n_items))
  rng = np.random.default_rng(0)
  label = jnp.asarray(rng.integers(0, n_items, b))
  negatives = jnp.asarray(np.stack([rng.choice(np.delete(np.arange(n_items), l), 999, replace=False)
                                    for l in np.asarray(label)]))
  sums = metrics.batch_metric_sums(scores, label, negatives, jnp.ones(b))
  for proto in ("full", "sampled"):
    assert float(sums[proto]["HR@10"]) / b <= 10 / 1000
    assert float(sums[proto]["MRR"]) / b < 0.01


def test_padding_rows_do_not_count():
  scores = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  label = jnp.array([0, 0])
  negatives = jnp.array([[1], [1]])
  sums = metrics.batch_metric_sums(scores, label, negatives, jnp.array([1.0, 0.0]))
  assert float(sums["full"]["HR@1"]) == 1.0
  assert float(sums["sampled"]["MRR"]) == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_reference(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 5, size=(16, 50)).astype(np.float32)  # many ties on purpose
  label = rng.integers(0, 50, 16)
  got = np.asarray(metrics.full_ranks(jnp.asarray(scores), jnp.asarray(label)))
  for i in range(16):
    others = np.delete(scores[i], label[i])
    expect = (others > scores[i, label[i]]).sum() + 0.5 * (others == scores[i, label[i]]).sum()
    assert got[i] == expect
