"""Tests for the item tables: padding, title projection, all_items, and that titles stay frozen."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lgcd_jax.model.items import FrozenEmbedding, ItemTable

N, D, TEXT = 7, 8, 5


def _titles(seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randn(N, TEXT).astype(np.float32)


def test_shapes_and_padding_is_zero():
  table = ItemTable(N, D, _titles(), rngs=nnx.Rngs(0))
  idx = jnp.array([[0, 1, 7], [3, 0, 0]])
  out = table(idx)
  assert out.shape == (2, 3, D)
  np.testing.assert_array_equal(out[0, 0], 0.0)
  np.testing.assert_array_equal(out[1, 1:], 0.0)
  assert np.all(np.abs(np.asarray(out[0, 1:])).sum(-1) > 0)
  np.testing.assert_array_equal(table.title(idx)[1, 1:], 0.0)


def test_all_items_rows_are_inputs_one_to_n():
  table = ItemTable(N, D, _titles(), rngs=nnx.Rngs(0))
  all_items = table.all_items()
  assert all_items.shape == (N, D)
  np.testing.assert_allclose(all_items, table(jnp.arange(1, N + 1)), rtol=1e-6)
  # Row j is item j = input j + 1, and includes the projected title of item j.
  expected = table.id_embedding[...][3] + np.asarray(_titles()[2]) @ table.title_proj.kernel[...]
  np.testing.assert_allclose(all_items[2], expected, rtol=1e-5, atol=1e-6)


def test_features_rows_are_lookups_and_padding_gets_no_gradient():
  table = ItemTable(N, D, _titles(), rngs=nnx.Rngs(0))
  # A non-zero padding row of the ID table must still give a zero feature row (and no gradient).
  table.id_embedding[...] = table.id_embedding[...].at[0].set(1.0)
  idx = jnp.array([[0, 1, 7], [3, 0, 2]])
  feats = table.features()
  assert feats.shape == (N + 1, D)
  np.testing.assert_array_equal(feats[0], 0.0)
  np.testing.assert_allclose(feats[idx], table(idx), rtol=1e-5, atol=1e-6)
  graph, params, rest = nnx.split(table, nnx.Param, ...)

  def loss(p):
    return jnp.sum(nnx.merge(graph, p, rest).features() ** 2)
  grads = jax.grad(loss)(params)
  np.testing.assert_array_equal(grads["id_embedding"][...][0], 0.0)
  assert np.all(np.abs(np.asarray(grads["id_embedding"][...][1:])).sum(-1) > 0)


@pytest.mark.parametrize("titles", [True, False])
def test_with_title_is_the_call_and_the_title_from_one_projection(titles):
  table = ItemTable(N, D, _titles() if titles else None, rngs=nnx.Rngs(0))
  table.id_embedding[...] = table.id_embedding[...].at[0].set(1.0)  # padding must still be zero
  idx = jnp.array([[0, 1, 7], [3, 0, 2]])
  feats, title = table.with_title(idx)
  np.testing.assert_allclose(feats, table(idx), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(title, table.title(idx))
  np.testing.assert_array_equal(feats[0, 0], 0.0)
  # The tables a server projects once (`LGCD.item_features`) give the same rows by gathering.
  np.testing.assert_allclose(table.features()[idx], feats, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(table.title_features()[idx], title, rtol=1e-5, atol=1e-6)
  assert table.title_features().shape == (N + 1, D)


def test_titles_projected_per_lookup_or_per_row_agree_with_their_gradients():
  # Fewer lookups than rows project each lookup; more project the whole table and gather: the
  # features, and the gradients of the trained parts, must not depend on which.
  table = ItemTable(N, D, _titles(), rngs=nnx.Rngs(0))
  few = jnp.array([[0, 1, 7], [3, 0, 2]])  # 6 lookups < N + 1 rows
  many = jnp.tile(few, (3, 1))  # 18 lookups
  graph, params, rest = nnx.split(table, nnx.Param, ...)

  def loss(p, idx):
    return jnp.sum(jnp.sin(nnx.merge(graph, p, rest)(idx)))
  out_few, out_many = table(few), table(many)
  np.testing.assert_allclose(out_many, jnp.tile(out_few, (3, 1, 1)), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(table.title(many)[0, 0], 0.0)
  g_few, g_many = jax.grad(loss)(params, few), jax.grad(loss)(params, many)
  for a, b in zip(jax.tree.leaves(g_few), jax.tree.leaves(g_many)):
    np.testing.assert_allclose(3 * np.asarray(a), b, rtol=1e-4, atol=1e-5)


def test_without_titles_and_with_id_init():
  init = np.arange(N * D, dtype=np.float32).reshape(N, D)
  table = ItemTable(N, D, None, rngs=nnx.Rngs(0), id_init=init)
  assert not table.has_titles
  np.testing.assert_array_equal(table.all_items(), init)
  np.testing.assert_array_equal(table.title(jnp.array([1, 2])), 0.0)
  with pytest.raises(ValueError):
    ItemTable(N, D, np.zeros((N + 1, TEXT)), rngs=nnx.Rngs(0))


def test_titles_are_frozen_not_params_and_survive_an_optimizer_step():
  table = ItemTable(N, D, _titles(), rngs=nnx.Rngs(0))
  assert isinstance(table.title_embedding, FrozenEmbedding)
  assert not isinstance(table.title_embedding, nnx.Param)
  params = nnx.state(table, nnx.Param)
  assert "title_embedding" not in params
  titles_before = np.asarray(table.title_embedding[...]).copy()
  proj_before = np.asarray(table.title_proj.kernel[...]).copy()
  ids_before = np.asarray(table.id_embedding[...]).copy()

  optimizer = nnx.Optimizer(table, optax.adam(1e-2), wrt=nnx.Param)

  def loss_fn(t):
    return jnp.sum(t.all_items() ** 2)

  @nnx.jit
  def step(t, opt):
    grads = nnx.grad(loss_fn)(t)
    opt.update(t, grads)

  step(table, optimizer)
  # The trained parts moved; the frozen titles (and padding row 0) did not.
  assert not np.allclose(table.title_proj.kernel[...], proj_before)
  assert not np.allclose(table.id_embedding[...][1:], ids_before[1:])
  np.testing.assert_array_equal(table.title_embedding[...], titles_before)
  np.testing.assert_array_equal(table(jnp.array([0])), 0.0)
