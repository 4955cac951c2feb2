"""The fast sampling paths give what the plain ones give: the per-batch condition cache (issue 11)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from test_lgcd import _batch, _config, _model


def _sample(config, sampler: str, cfg_batched: bool | None = None):
  """(per-step chain, cached chain) from one compiled function (one compile per case)."""
  model = _model(config)
  batch = {k: jnp.asarray(v) for k, v in _batch(config, batch_size=5).items()}
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, batch, rng):
    m = nnx.merge(graphdef, state)
    if cfg_batched is not None:  # the CFG form the backend would not pick by default
      m.sampling_denoiser = functools.partial(m.sampling_denoiser, cfg_batched=cfg_batched)
    return [m.sample(batch, rng, sampler, cached=c) for c in (False, True)]

  return [np.asarray(x) for x in run(state, batch, jax.random.key(3))]


# Two layers so that the cached keys/values of more than one block are exercised; MoE on and off.
@pytest.mark.parametrize("conditioning", ["cross_attention", "linear", "cfg", "collab_only",
                                          "semantic_only"])
def test_cached_chain_equals_per_step_chain(conditioning):
  config = _config(conditioning=conditioning, denoiser_layers=2,
                   use_moe=conditioning != "linear")
  per_step, cached = _sample(config, "ddim")
  assert np.all(np.isfinite(cached))
  np.testing.assert_allclose(cached, per_step, atol=1e-5, rtol=1e-5)


def test_cached_batched_cfg_equals_per_step_ddpm():
  # DDPM from pure noise (no guesser): the dmcdr-like chain, in the CFG form the CPU does not pick
  # by default (one batched call; the ddim case above runs the CPU's two-call form).
  config = _config(conditioning="cfg", use_guesser=False)
  per_step, cached = _sample(config, "ddpm", cfg_batched=True)
  np.testing.assert_allclose(cached, per_step, atol=1e-5, rtol=1e-5)


def test_denoiser_step_matches_call_with_per_row_steps():
  # `step` also takes one step per row (t [B]), as training's loss would.
  config = _config(conditioning="cross_attention", denoiser_layers=2)
  model = _model(config)
  batch = {k: jnp.asarray(v) for k, v in _batch(config, batch_size=4).items()}
  cond = model.conditions(batch)
  pathway = model.pathway(batch["real"])
  x_t = jax.random.normal(jax.random.key(0), (4, config.model.d))
  t = jnp.array([0, 3, 7, 9], jnp.int32)
  ref, ref_gate = model.denoiser(x_t, t, cond, pathway)
  out, gate = model.denoiser.step(x_t, t, model.denoiser.prepare(cond, pathway))
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(gate, ref_gate, atol=1e-6)


# --- streaming top-k ------------------------------------------------------------------------------

from lgcd_jax.model import scoring  # noqa: E402


@pytest.mark.parametrize("chunk,block", [(7, 1), (7, 3), (16, 4), (16, 32), (50, 5), (64, 8),
                                         (9, 2), (20, 6)])
@pytest.mark.parametrize("k", [1, 9, 23])
def test_streaming_top_k_equals_full_top_k_with_ties(chunk, block, k):
  rs = np.random.RandomState(k)
  n, d = 50, 4
  # Integer-valued features give many exactly equal scores across and within chunks and blocks;
  # k * block above n, chunks that do not divide n and blocks that do not divide chunks included.
  emb = jnp.asarray(rs.randint(-1, 2, (n, d)).astype(np.float32))
  bias = jnp.asarray(rs.randint(0, 2, n).astype(np.float32))
  x = jnp.asarray(rs.randint(-1, 2, (6, d)).astype(np.float32))
  item_fn = lambda idx: (emb[idx], bias[idx])
  want_v, want_i = jax.lax.top_k(x @ emb.T + bias[None], k)
  got_v, got_i = jax.jit(scoring.streaming_top_k, static_argnums=(1, 2, 3, 4, 5))(
      x, item_fn, n, k, chunk, block)
  np.testing.assert_array_equal(got_i, want_i)
  np.testing.assert_array_equal(got_v, want_v)


def test_streaming_top_k_of_random_scores_over_many_chunks():
  rs = np.random.RandomState(1)
  n, d, k = 3000, 8, 10
  emb = jnp.asarray(rs.randn(n, d).astype(np.float32))
  x = jnp.asarray(rs.randn(5, d).astype(np.float32))
  item_fn = lambda idx: (emb[idx], None)
  want_v, want_i = scoring.full_top_k(x, item_fn, n, k)
  got_v, got_i = scoring.streaming_top_k(x, item_fn, n, k, chunk=256, block=16)
  np.testing.assert_array_equal(got_i, want_i)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-6)


def test_model_top_k_equals_top_k_of_score():
  config = _config(item_bias=True)
  model = _model(config)
  x = jax.random.normal(jax.random.key(1), (3, config.model.d))
  want_v, want_i = jax.lax.top_k(model.score(x), 5)
  got_v, got_i = model.top_k(x, 5, chunk=6)  # 20 items: chunks of 6, the last one padded
  np.testing.assert_array_equal(got_i, want_i)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-6, atol=1e-6)


# --- micro-batches ------------------------------------------------------------------------------

from lgcd_jax import inference  # noqa: E402


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_micro_batched_top_k_equals_the_whole_batch(sampler, monkeypatch):
  # 7 users in groups of 3 (the last padded with a copy of its last user), sorted by length and cut
  # to widths 2 / 4 / maxlen. Each user's noise comes from its noise_id, so every group must give
  # what the whole batch gives, in the batch's row order. Groups of 4 with SPLIT_WIDEST_MIN = 2:
  # the second group (lengths 3, 4, maxlen, its padded copy) needs the full width, so it runs as
  # two halves, at widths 4 and maxlen, and each half as two single users (groups of 3 are odd:
  # never split). Precomputed item features give the same again.
  monkeypatch.setattr(inference, "SPLIT_WIDEST_MIN", 2)
  config = _config(denoiser_layers=2)
  model = _model(config)
  feats = model.item_features()
  graphdef, state = nnx.split(model)
  batch = _batch(config, batch_size=7)
  batch = {k: jnp.asarray(batch[k]) for k in ("src", "clue", "clue_sim", "summary", "has_summary")}
  maxlen = batch["src"].shape[1]
  lengths = np.array([1, maxlen, 2, 3, 1, 4, 2])  # sorting moves rows across groups
  batch["src"] = jnp.where(jnp.arange(maxlen)[None] >= maxlen - lengths[:, None],
                           jnp.maximum(batch["src"], 1), 0)
  batch["noise_id"] = jnp.arange(100, 107, dtype=jnp.uint32)
  key = jax.random.key(5)

  @functools.partial(jax.jit, static_argnums=(3, 4))
  def run(state, batch, key, micro_batch, widths, feats=None):
    return inference.top_k(nnx.merge(graphdef, state), batch, key, sampler, 4, 5, chunk=6,
                           micro_batch=micro_batch, group_widths=widths, feats=feats)
  want_v, want_i = run(state, batch, key, None, ())
  cases = [(3, (2, 4), False), (4, (2, 4), True)]  # each case compiles the whole sampler: few
  if sampler == "ddim":
    cases += [(3, (), False), (None, (), True)]
  for micro_batch, widths, with_feats in cases:
    got_v, got_i = run(state, batch, key, micro_batch, widths, feats if with_feats else None)
    assert got_i.shape == (7, 5)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5, atol=1e-5)
  # Without per-user noise a split would change the users' noise: the whole batch runs instead.
  del batch["noise_id"]
  np.testing.assert_array_equal(run(state, batch, key, 3, (2, 4))[1], run(state, batch, key, None, ())[1])
