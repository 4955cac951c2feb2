"""Tests for the denoiser and its parts: masked attention, cross-attention block, MoE, guesser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lgcd_jax.model.attention import (CrossAttentionBlock, MultiHeadAttention, masked_softmax,
                                      stacked_keys_values)
from lgcd_jax.model.denoiser import Conditions, Denoiser, timestep_embedding
from lgcd_jax.model.guesser import Guesser
from lgcd_jax.model.moe import MoEFusion

B, D, LC, LS = 3, 8, 5, 4


def _key_mask():
  # Row 0 sees everything, row 1 two keys, row 2 nothing at all.
  return jnp.asarray(np.arange(LC)[None, :] < np.array([[LC], [2], [0]]))


def test_masked_softmax_all_masked_row_is_zero_with_finite_grads():
  logits = jnp.asarray(np.random.RandomState(0).randn(2, 3).astype(np.float32))
  mask = jnp.array([[True, False, True], [False, False, False]])
  probs = masked_softmax(logits, mask)
  np.testing.assert_allclose(probs.sum(-1), [1.0, 0.0], rtol=1e-6)
  assert probs[0, 1] == 0.0
  grads = jax.grad(lambda x: jnp.sum(masked_softmax(x, mask) * jnp.arange(3.0)))(logits)
  assert np.isfinite(np.asarray(grads)).all()


def test_attention_ignores_masked_keys_and_is_finite_when_all_masked():
  attn = MultiHeadAttention(D, 2, 0.0, rngs=nnx.Rngs(0))
  rs = np.random.RandomState(1)
  q = jnp.asarray(rs.randn(B, 2, D).astype(np.float32))
  kv = jnp.asarray(rs.randn(B, LC, D).astype(np.float32))
  mask = _key_mask()
  f = jax.jit(lambda q, kv: attn(q, kv, mask[:, None, :]))
  out = np.asarray(f(q, kv))
  assert out.shape == (B, 2, D) and np.isfinite(out).all()
  kv_changed = jnp.where(mask[..., None], kv, 1e3)
  np.testing.assert_allclose(f(q, kv_changed), out, rtol=1e-5, atol=1e-5)
  # The all-masked row attends to nothing: only the output projection's bias remains.
  np.testing.assert_allclose(out[2], np.broadcast_to(attn.out.bias[...], (2, D)), atol=1e-6)


def test_cross_attention_block_shapes_mask_and_grads():
  block = CrossAttentionBlock(D, 2, 0.1, rngs=nnx.Rngs(0))
  rs = np.random.RandomState(2)
  q = jnp.asarray(rs.randn(B, 1, D).astype(np.float32))
  tokens = jnp.asarray(rs.randn(B, LC, D).astype(np.float32))
  mask = _key_mask()
  graph, state = nnx.split(block)

  @jax.jit
  def run(state, q, tokens, rng):
    def f(state):
      return jnp.sum(nnx.merge(graph, state)(q, tokens, mask, rng) ** 2)
    return nnx.merge(graph, state)(q, tokens, mask), jax.grad(f)(state)

  out, grads = run(state, q, tokens, jax.random.key(0))
  assert out.shape == (B, 1, D)
  assert np.isfinite(np.asarray(out)).all()
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  out_changed, _ = run(state, q, jnp.where(mask[..., None], tokens, -50.0), jax.random.key(0))
  np.testing.assert_allclose(out_changed, out, rtol=1e-5, atol=1e-5)


def test_self_attend_equals_attention_over_itself():
  attn = MultiHeadAttention(D, 2, 0.0, rngs=nnx.Rngs(0))
  rs = np.random.RandomState(1)
  for p in (attn.query, attn.key, attn.value):  # biases apart from zero, so their order counts
    p.bias[...] = jnp.asarray(rs.randn(D).astype(np.float32))
  x = jnp.asarray(rs.randn(B, LC, D).astype(np.float32))
  mask = jnp.tril(jnp.ones((LC, LC), bool))[None] & _key_mask()[:, None, :]
  np.testing.assert_allclose(attn.self_attend(x, mask), attn(x, x, mask), rtol=1e-5, atol=1e-6)


def test_stacked_keys_values_equal_each_blocks_own():
  # Trained LayerNorms have scales and shifts of their own: set them apart from 1 and 0, so that
  # folding them into the stacked kernel and bias is checked, not just the shared normalisation.
  blocks = [CrossAttentionBlock(D, 2, 0.0, rngs=nnx.Rngs(i)) for i in range(3)]
  rs = np.random.RandomState(0)
  for b in blocks:
    b.ln_kv.scale[...] = jnp.asarray(1.0 + rs.randn(D).astype(np.float32))
    b.ln_kv.bias[...] = jnp.asarray(rs.randn(D).astype(np.float32))
    b.attn.key.bias[...] = jnp.asarray(rs.randn(D).astype(np.float32))
  tokens = jnp.asarray(3.0 * rs.randn(B, LC, D).astype(np.float32) + 1.0)
  got = stacked_keys_values(blocks, tokens)
  assert len(got) == 3
  for b, (k, v) in zip(blocks, got):
    want_k, want_v = b.keys_values(tokens)
    assert k.shape == want_k.shape == (B, 2, LC, D // 2)
    np.testing.assert_allclose(k, want_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, want_v, rtol=1e-5, atol=1e-5)
  assert stacked_keys_values([], tokens) == ()


def test_moe_gate_sums_to_one_and_mixes_experts():
  moe = MoEFusion(6, D, 3, 4, rngs=nnx.Rngs(0))
  # The gate starts uniform (zero kernel); give it weights so the test sees a real mixture.
  moe.gate.kernel[...] = jax.random.normal(jax.random.key(1), moe.gate.kernel.shape)
  moe.b2[...] = jax.random.normal(jax.random.key(2), moe.b2.shape)  # zeros at init: test it too
  rs = np.random.RandomState(3)
  x = jnp.asarray(rs.randn(B, 6).astype(np.float32))
  gate_in = jnp.asarray(rs.randn(B, 4).astype(np.float32))
  out, probs = jax.jit(lambda x, g: moe(x, g))(x, gate_in)
  assert out.shape == (B, D) and probs.shape == (B, 3)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  assert np.ptp(np.asarray(probs), axis=0).max() > 0.01  # Different users, different gates.
  # out = sum_e p_e * expert_e(x), each expert a two-layer GELU MLP.
  w1, b1, w2, b2 = (np.asarray(p[...]) for p in (moe.w1, moe.b1, moe.w2, moe.b2))
  experts = np.stack([np.asarray(jax.nn.gelu(np.asarray(x) @ w1[e] + b1[e])) @ w2[e] + b2[e]
                      for e in range(3)], axis=1)
  np.testing.assert_allclose(out, np.einsum("be,bed->bd", probs, experts), rtol=1e-4, atol=1e-5)


def test_moe_ablation_is_one_expert_with_unit_gate():
  moe = MoEFusion(6, D, 3, 4, rngs=nnx.Rngs(0), use_moe=False)
  out, probs = moe(jnp.ones((B, 6)), jnp.ones((B, 4)))
  assert out.shape == (B, D)
  np.testing.assert_array_equal(probs, np.ones((B, 1)))
  assert moe.gate is None and moe.w1.shape[0] == 1


def test_guesser_and_step_embedding_shapes():
  guesser = Guesser(3 * D, D, rngs=nnx.Rngs(0), dropout_rate=0.5)
  cond = jnp.asarray(np.random.RandomState(4).randn(B, 3 * D).astype(np.float32))
  guess = guesser(cond)
  assert guess.shape == (B, D)
  np.testing.assert_array_equal(guesser(cond), guess)  # Deterministic without a key.
  assert not np.allclose(guesser(cond, jax.random.key(0)), guess)
  emb = timestep_embedding(jnp.array([0, 1, 9]), 7)
  assert emb.shape == (3, 7)
  assert not np.allclose(emb[1], emb[2])


def _conditions(seed: int = 0) -> Conditions:
  rs = np.random.RandomState(seed)
  f = lambda *s: jnp.asarray(rs.randn(*s).astype(np.float32))
  sem_mask = jnp.asarray(np.arange(LS)[None, :] < np.array([[LS], [1], [0]]))
  return Conditions(collab_tokens=f(B, LC, D), collab_mask=_key_mask(), sem_tokens=f(B, LS, D),
                    sem_mask=sem_mask, collab_pooled=f(B, D), sem_pooled=f(B, D))


# collab_only / semantic_only differ from cross_attention only in the masks LGCD builds (test_lgcd).
@pytest.mark.parametrize("conditioning", ["cross_attention", "linear", "cfg"])
def test_denoiser_variants_shapes_and_finite(conditioning):
  # Dropout (and its compile time) once, on the attention path.
  rate = 0.1 if conditioning == "cross_attention" else 0.0
  den = Denoiser(D, 2, 1, 2, rngs=nnx.Rngs(0), conditioning=conditioning, dropout_rate=rate)
  cond = _conditions()
  x_t = jnp.asarray(np.random.RandomState(5).randn(B, D).astype(np.float32))
  t = jnp.array([0, 4, 9])
  pathway = jnp.ones((B, D))
  drop = jnp.array([True, False, True]) if conditioning == "cfg" else None
  x0, gate = jax.jit(lambda x, r: den(x, t, cond, pathway, r, drop))(x_t, jax.random.key(0))
  assert x0.shape == (B, D) and gate.shape == (B, 2)
  assert np.isfinite(np.asarray(x0)).all()
  np.testing.assert_allclose(gate.sum(-1), 1.0, rtol=1e-6)


def test_denoiser_attends_only_to_unmasked_tokens_and_depends_on_them():
  den = Denoiser(D, 2, 2, 2, rngs=nnx.Rngs(0))
  cond = _conditions()
  x_t, t, pathway = jnp.ones((B, D)), jnp.array([1, 2, 3]), jnp.zeros((B, D))
  f = jax.jit(lambda c: den(x_t, t, c, pathway)[0])
  base = np.asarray(f(cond))
  masked_changed = cond.replace(
      collab_tokens=jnp.where(cond.collab_mask[..., None], cond.collab_tokens, 9.0),
      sem_tokens=jnp.where(cond.sem_mask[..., None], cond.sem_tokens, -9.0))
  np.testing.assert_allclose(f(masked_changed), base, rtol=1e-5, atol=1e-5)
  # A random change (a constant shift would vanish in the keys' LayerNorm).
  valid_changed = cond.replace(collab_tokens=_conditions(seed=3).collab_tokens)
  moved = np.abs(np.asarray(f(valid_changed)) - base).max(-1)
  assert moved[0] > 1e-4 and moved[1] > 1e-4  # Rows with visible collaborative tokens react.
  assert moved[2] < 1e-5  # Row 2 sees no collaborative token: the change is invisible to it.


def test_cfg_null_condition_replaces_the_condition():
  den = Denoiser(D, 2, 1, 2, rngs=nnx.Rngs(0), conditioning="cfg")
  cond = _conditions()
  x_t, t, pathway = jnp.ones((B, D)), jnp.array([1, 2, 3]), jnp.zeros((B, D))
  drop = jnp.array([True, False, True])
  f = jax.jit(lambda c: den(x_t, t, c, pathway, drop_cond=drop)[0])
  base = np.asarray(f(cond))
  other = np.asarray(f(_conditions(seed=7)))
  # Dropped rows see only the null condition; the kept row follows its own condition.
  np.testing.assert_allclose(other[[0, 2]], base[[0, 2]], rtol=1e-5, atol=1e-6)
  assert not np.allclose(other[1], base[1])
  with pytest.raises(ValueError):
    Denoiser(D, 2, 1, 2, rngs=nnx.Rngs(0))(x_t, t, cond, pathway, drop_cond=drop)
