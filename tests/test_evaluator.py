"""The evaluation loop shared by every method (lgcd_jax/evaluation/evaluator.py): non-finite scores,
padding rows, metrics per source-history length."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lgcd_jax.evaluation import evaluator


def _eval_batch(n_real: int, b: int = 4, n_items: int = 6):
  return {"label": np.zeros(b, np.int32), "negatives": np.tile(np.arange(1, 4, dtype=np.int32), (b, 1)),
          "weight": (np.arange(b) < n_real).astype(np.float32),
          "user": np.where(np.arange(b) < n_real, np.arange(b), -1).astype(np.int32),
          "src": np.zeros((b, n_items), np.int32)}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_score_of_a_real_row_fails_the_evaluation(bad):
  batch = _eval_batch(n_real=3)

  def score(b):
    s = np.tile(np.linspace(0.0, 1.0, 6, dtype=np.float32), (4, 1))
    s[2, 0] = bad  # the positive of real row 2: NaN used to rank -0.5, a "perfect" hit
    return jnp.asarray(s)
  with pytest.raises(evaluator.NonFiniteScoreError, match="row 2 of the split"):
    evaluator.evaluate(score, [batch])

  def score_negative(b):  # a non-finite negative is as broken as a non-finite positive
    s = np.zeros((4, 6), np.float32)
    s[1, 3] = bad
    return jnp.asarray(s)
  with pytest.raises(evaluator.NonFiniteScoreError, match="1 evaluation user"):
    evaluator.evaluate(score_negative, [batch])


def test_non_finite_score_of_a_padding_row_is_ignored():
  batch = _eval_batch(n_real=3)

  def score(b):
    s = np.tile(np.linspace(1.0, 0.0, 6, dtype=np.float32), (4, 1))
    s[3] = np.nan  # padding row (weight 0)
    return jnp.asarray(s)
  out = evaluator.evaluate(score, [batch])
  assert out["n_users"] == 3 and out["full"]["HR@1"] == 1.0


def test_by_source_length_by_hand():
  """Five users and a padding row; ranks chosen by hand, bucketed by their source items."""
  lengths = [1, 3, 5, 9, 2, 9]  # the last row is padding (weight 0): it counts nowhere
  src = np.zeros((6, 10), np.int32)
  for row, n in enumerate(lengths):
    src[row, 10 - n:] = np.arange(1, n + 1)  # left-padded, items+1
  scores = np.array([[5, 4, 3, 2, 1, 0],   # label top: full rank 0, sampled 0
                     [4, 5, 3, 2, 1, 0],   # item 1 above: full 1, sampled 1
                     [1, 5, 4, 3, 2, 0],   # items 1-4 above: full 4, sampled 3 (negatives 1-3)
                     [5, 4, 3, 2, 1, 0],   # top
                     [0, 5, 4, 3, 2, 1],   # every item above: full 5, sampled 3
                     [0, 5, 4, 3, 2, 1]], np.float32)
  batch = {"label": np.zeros(6, np.int32), "negatives": np.tile(np.arange(1, 4, dtype=np.int32), (6, 1)),
           "weight": np.array([1, 1, 1, 1, 1, 0], np.float32),
           "user": np.array([0, 1, 2, 3, 4, -1], np.int32), "src": src}
  out = evaluator.evaluate(lambda b: jnp.asarray(scores), [batch])
  by = out["by_source_length"]
  assert list(by) == ["0-1", "2-3", "4-7", "8+"]
  assert [by[k]["n_users"] for k in by] == [1, 2, 1, 1]
  assert by["0-1"]["sampled"]["HR@1"] == 1.0 and by["8+"]["full"]["MRR"] == 1.0
  # 2-3: users 1 and 4, sampled ranks 1 and 3, full ranks 1 and 5.
  s, f = by["2-3"]["sampled"], by["2-3"]["full"]
  assert s["HR@1"] == 0.0 and s["HR@5"] == 1.0
  np.testing.assert_allclose(s["MRR"], (1 / 2 + 1 / 4) / 2)
  np.testing.assert_allclose(s["NDCG@5"], (1 / math.log2(3) + 1 / math.log2(5)) / 2, rtol=1e-6)
  assert f["HR@5"] == 0.5 and f["HR@10"] == 1.0
  np.testing.assert_allclose(f["MRR"], (1 / 2 + 1 / 6) / 2, rtol=1e-6)
  # 4-7: user 2, sampled rank 3, full rank 4.
  np.testing.assert_allclose(by["4-7"]["sampled"]["MRR"], 1 / 4)
  np.testing.assert_allclose(by["4-7"]["full"]["NDCG@5"], 1 / math.log2(6), rtol=1e-6)
  # The buckets partition the users: their weighted means are the overall means.
  for proto in ("sampled", "full"):
    for k, v in out[proto].items():
      np.testing.assert_allclose(sum(b["n_users"] * b[proto][k] for b in by.values()) / 5, v,
                                 rtol=1e-6)
