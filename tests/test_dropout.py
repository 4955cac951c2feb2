"""Tests for `attention.dropout`: the byte-drawn inverted dropout every module uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lgcd_jax.model.attention import dropout


def test_no_key_or_zero_rate_is_identity():
  x = jnp.arange(12.0).reshape(3, 4)
  assert dropout(nnx.Dropout(0.5), x, None) is x
  np.testing.assert_array_equal(dropout(nnx.Dropout(0.0), x, jax.random.key(0)), x)


def test_drop_rate_scale_and_mean():
  x = jnp.ones((257, 129))  # an odd size: the byte view of the words is cut to the array's size
  out = np.asarray(dropout(nnx.Dropout(0.25), x, jax.random.key(1)))
  kept = out != 0
  np.testing.assert_allclose(out[kept], 256 / (256 - 64))  # rate 0.25 = 64/256 exactly
  assert abs(1 - kept.mean() - 0.25) < 0.01  # 33,153 draws: ~0.0024 std
  assert abs(out.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation


def test_masks_differ_by_key_and_position():
  x = jnp.ones((64, 64))
  layer = nnx.Dropout(0.5)
  a = np.asarray(dropout(layer, x, jax.random.key(0)) != 0)
  b = np.asarray(dropout(layer, x, jax.random.key(1)) != 0)
  np.testing.assert_array_equal(a, np.asarray(dropout(layer, x, jax.random.key(0)) != 0))
  assert 0.4 < (a != b).mean() < 0.6  # independent keys: about half the elements differ
  # The four bytes of one word land on neighbouring elements; they must not be one draw repeated.
  assert 0.4 < (a[:, 0::4] != a[:, 1::4]).mean() < 0.6


def test_rate_one_drops_everything_with_finite_gradients():
  x = jnp.ones((5, 7))
  np.testing.assert_array_equal(dropout(nnx.Dropout(1.0), x, jax.random.key(0)), 0.0)
  g = jax.grad(lambda v: jnp.sum(dropout(nnx.Dropout(0.5), v, jax.random.key(0))))(x)
  assert set(np.unique(np.asarray(g))) <= {0.0, 2.0}
