"""Tests for the SASRec-style encoder: shapes, padding and causal masks, last_state, the loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lgcd_jax.model.encoder import SequenceEncoder, last_state, next_item_loss
from lgcd_jax.model.items import ItemTable

B, L, D, N = 3, 6, 8, 11


def _encoder(dropout: float = 0.0, layers: int = 2) -> SequenceEncoder:
  return SequenceEncoder(D, 2, layers, L, dropout, rngs=nnx.Rngs(0))


# One encoder, one compiled function, shared by the masking tests (compiling dominates their time).
_GRAPH, _STATE = nnx.split(_encoder())
_encode = jax.jit(lambda emb, mask: nnx.merge(_GRAPH, _STATE)(emb, mask))


def _inputs(seed: int = 0):
  rs = np.random.RandomState(seed)
  emb = jnp.asarray(rs.randn(B, L, D).astype(np.float32))
  # Left-padded: row 0 full, row 1 three items, row 2 one item.
  mask = jnp.asarray(np.arange(L)[None, :] >= np.array([[0], [3], [5]]))
  return emb, mask


def test_shapes_and_padded_states_are_zero():
  emb, mask = _inputs()
  states = _encode(emb, mask)
  assert states.shape == (B, L, D)
  np.testing.assert_array_equal(np.asarray(states)[~np.asarray(mask)], 0.0)
  assert np.isfinite(np.asarray(states)).all()


def test_padding_never_leaks_into_valid_positions():
  emb, mask = _inputs()
  other = jnp.where(mask[..., None], emb, 100.0 * jax.random.normal(jax.random.key(1), emb.shape))
  a, b = np.asarray(_encode(emb, mask)), np.asarray(_encode(other, mask))
  valid = np.asarray(mask)
  np.testing.assert_allclose(a[valid], b[valid], rtol=1e-5, atol=1e-5)


def test_position_t_never_sees_t_plus_one():
  emb, _ = _inputs()
  mask = jnp.ones((B, L), bool)
  t = 2
  changed = emb.at[:, t + 1:].set(jax.random.normal(jax.random.key(3), (B, L - t - 1, D)))
  a, b = np.asarray(_encode(emb, mask)), np.asarray(_encode(changed, mask))
  np.testing.assert_allclose(a[:, :t + 1], b[:, :t + 1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(a[:, t + 1:], b[:, t + 1:])  # The test can fail: later positions do move.


def test_dropout_only_with_rng():
  graph, state = nnx.split(_encoder(dropout=0.5, layers=1))
  f = jax.jit(lambda e, m, r: nnx.merge(graph, state)(e, m, r))
  emb, mask = _inputs()
  det1, det2 = f(emb, mask, None), f(emb, mask, None)
  np.testing.assert_array_equal(det1, det2)
  drop1, drop2 = f(emb, mask, jax.random.key(0)), f(emb, mask, jax.random.key(1))
  assert not np.allclose(drop1, det1) and not np.allclose(drop1, drop2)


def test_last_state_picks_last_valid_position():
  states = jnp.arange(2 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 1) + 1
  mask = jnp.array([[False, True, True, True], [False, False, False, False]])
  np.testing.assert_array_equal(last_state(states, mask)[:, 0], [4.0, 0.0])
  right_padded = jnp.array([[True, True, False, False], [True, False, False, False]])
  np.testing.assert_array_equal(last_state(states, right_padded)[:, 0], [2.0, 5.0])


def _seq_batch():
  # Items + 1, left-padded, maxlen + 1 columns; the last row is a padding row.
  seq = np.array([[0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 6, 7, 8, 9], [0, 2, 4, 6, 8, 10, 11],
                  [0, 0, 0, 0, 0, 3, 5]], np.int32)
  weight = np.array([1, 1, 1, 0], np.float32)
  return jnp.asarray(seq), jnp.asarray(weight)


def test_full_softmax_matches_manual_cross_entropy():
  enc, table = _encoder(layers=1), ItemTable(N, D, None, rngs=nnx.Rngs(1))
  seq, weight = _seq_batch()
  loss = jax.jit(lambda s, w, r: next_item_loss(enc, table, s, w, r, 0))(seq, weight,
                                                                        jax.random.key(0))
  inputs, targets = np.asarray(seq[:, :-1]), np.asarray(seq[:, 1:])
  states, items = jax.jit(lambda s: (enc(table(s), s > 0), table.all_items()))(seq[:, :-1])
  logits = np.asarray(states) @ np.asarray(items).T
  total, count = 0.0, 0
  for b in range(3):  # Row 3 has weight 0.
    for t in range(L):
      if inputs[b, t] > 0 and targets[b, t] > 0:
        lse = np.log(np.exp(logits[b, t] - logits[b, t].max()).sum()) + logits[b, t].max()
        total += lse - logits[b, t, targets[b, t] - 1]
        count += 1
  np.testing.assert_allclose(loss, total / count, rtol=1e-5)


def test_sampled_softmax_is_finite_and_below_full():
  enc, table = _encoder(layers=1), ItemTable(N, D, None, rngs=nnx.Rngs(1))
  seq, weight = _seq_batch()
  loss = jax.jit(lambda r, k: next_item_loss(enc, table, seq, weight, r, k), static_argnums=1)
  full, sampled = loss(jax.random.key(0), 0), loss(jax.random.key(0), 3)
  # Three negatives (minus accidental hits) are fewer competitors than all N items.
  assert np.isfinite(sampled) and sampled < full


def test_next_item_training_reduces_loss():
  enc, table = _encoder(layers=1), ItemTable(N, D, None, rngs=nnx.Rngs(1))
  model = nnx.List([enc, table])
  seq, weight = _seq_batch()
  graphdef, params = nnx.split(model)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  def loss_fn(p, r):
    e, t = nnx.merge(graphdef, p)
    return next_item_loss(e, t, seq, weight, r, 4)

  @jax.jit
  def step(p, o, r):
    loss, grads = jax.value_and_grad(loss_fn)(p, r)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  def full_eval(p):
    e, t = nnx.merge(graphdef, p)
    return next_item_loss(e, t, seq, weight, jax.random.key(0), 0, train=False)

  before = full_eval(params)
  for i in range(60):
    params, opt_state, _ = step(params, opt_state, jax.random.key(i))
  assert full_eval(params) < 0.5 * before
