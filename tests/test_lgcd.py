"""Tests for the whole LGCD model: every variant under jit, loss weighting, a tiny overfit run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from lgcd_jax.model.items import FrozenEmbedding
from lgcd_jax.model.lgcd import LGCD

NUM_SRC, NUM_TGT, B = 30, 20, 6


def _config(**model_overrides):
  # configs/tiny.py: d=16, T=10, T'=5, S=5, one encoder and one denoiser layer. No dropout: every
  # dropout site costs compile time (see VARIANTS).
  return tiny_config(**{"model.dropout": 0.0,
                        **{f"model.{k}": v for k, v in model_overrides.items()}})


def _titles(n: int, text_dim: int, seed: int) -> np.ndarray:
  return np.random.RandomState(seed).randn(n, text_dim).astype(np.float32)


def _model(config, seed: int = 0, src_titles: bool = True) -> LGCD:
  text_dim = config.clues.text_dim
  return LGCD(config, NUM_SRC, NUM_TGT, _titles(NUM_SRC, text_dim, 1) if src_titles else None,
              _titles(NUM_TGT, text_dim, 2), rngs=nnx.Rngs(seed))


def _batch(config, seed: int = 0, batch_size: int = B) -> dict[str, np.ndarray]:
  """A random pair batch: mixed real/pseudo rows, ragged left-padded sequences, one padding row."""
  rs = np.random.RandomState(seed)
  maxlen, clue_len, text_dim = config.data.maxlen, config.data.clue_len, config.clues.text_dim
  lengths = rs.randint(1, maxlen + 1, batch_size)
  left = np.arange(maxlen)[None, :] >= (maxlen - lengths)[:, None]
  src = np.where(left, rs.randint(1, NUM_SRC + 1, (batch_size, maxlen)), 0)
  tgt_left = np.arange(maxlen)[None, :] >= (maxlen - rs.randint(1, maxlen + 1, batch_size))[:, None]
  tgt = np.where(tgt_left, rs.randint(1, NUM_TGT + 1, (batch_size, maxlen)), 0)
  real = (np.arange(batch_size) % 2).astype(np.int32)
  tgt_weight = np.where(tgt > 0, np.where(real[:, None] == 1, 1.0, rs.rand(batch_size, maxlen)), 0)
  clue_right = np.arange(clue_len)[None, :] < rs.randint(0, clue_len + 1, batch_size)[:, None]
  clue = np.where(clue_right, rs.randint(1, NUM_TGT + 1, (batch_size, clue_len)), 0)
  weight = np.ones(batch_size, np.float32)
  weight[-1] = 0.0
  return dict(
      src=src.astype(np.int32), tgt=tgt.astype(np.int32),
      tgt_weight=tgt_weight.astype(np.float32), clue=clue.astype(np.int32),
      clue_sim=np.where(clue > 0, rs.rand(batch_size, clue_len), 0).astype(np.float32),
      summary=rs.randn(batch_size, text_dim).astype(np.float32),
      has_summary=(rs.rand(batch_size) < 0.7).astype(np.float32), real=real, weight=weight,
      user=np.arange(batch_size, dtype=np.int32))


def _runner(graphdef):
  """A jitted (state, batch, rng) -> (loss, metrics, x0_hat, scores, conditions) of one model."""
  @jax.jit
  def run(state, batch, rng):
    m = nnx.merge(graphdef, state)
    r_loss, r_sample = jax.random.split(rng)
    loss, metrics = m.loss(batch, r_loss, train=True)
    x0_hat = m.sample(batch, r_sample)
    return loss, metrics, x0_hat, m.score(x0_hat), m.conditions(batch)
  return run


@functools.cache
def _compiled(name: str):
  """Per variant, one jitted (state, batch, rng) -> (loss, metrics, x0_hat, scores), cached."""
  config = _config(**VARIANTS[name])
  graphdef, state = nnx.split(_model(config))
  run = _runner(graphdef)
  return config, lambda state, batch, rng: run(state, batch, rng)[:4], state


# Every conditioning variant and every ablation switch, a few switches per compiled model (each
# compile costs seconds on a CPU). The checks below are per switch.
VARIANTS = {
    # Dropout stays off: each dropout site costs compile time, and the modules' dropout paths are
    # covered in test_encoder / test_denoiser.
    "default": dict(),  # cross-attention, MoE, guesser, alignment, DDIM.
    "linear_no_moe": dict(conditioning="linear", use_moe=False),  # DreamRec-style MLP.
    "cfg_ddpm": dict(conditioning="cfg", sampler="ddpm"),
    "collab_only_no_alignment": dict(conditioning="collab_only", use_alignment=False),
    "semantic_only_no_guesser": dict(conditioning="semantic_only", use_guesser=False),
    "no_diffusion": dict(use_diffusion=False),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_loss_and_sample_are_finite_under_jit(name):
  config, run, state = _compiled(name)
  batch = _batch(config)
  loss, metrics, x0_hat, scores = run(state, batch, jax.random.key(0))
  assert x0_hat.shape == (B, config.model.d) and scores.shape == (B, NUM_TGT)
  for value in [loss, x0_hat, scores, *metrics.values()]:
    assert np.isfinite(np.asarray(value)).all(), name
  m = config.model

  # The reported terms add up to the loss, each present exactly when it is part of the objective.
  train = config.train
  expected = train.rec_weight * metrics["rec_loss"]
  expected += metrics["diffusion_loss"] if m.use_diffusion else 0.0
  assert ("diffusion_loss" in metrics) == m.use_diffusion
  uses_guesser = m.use_guesser or not m.use_diffusion
  assert ("guesser_loss" in metrics) == uses_guesser
  expected += train.guesser_weight * metrics["guesser_loss"] if uses_guesser else 0.0
  # The guess is trained to rank as well whenever it starts a reverse chain.
  guess_ranks = m.use_guesser and m.use_diffusion
  assert ("guesser_rec_loss" in metrics) == guess_ranks
  expected += train.guesser_rec_weight * metrics["guesser_rec_loss"] if guess_ranks else 0.0
  expected += train.alignment_weight * metrics["alignment_loss"] if m.use_alignment else 0.0
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert metrics["rows"] == B - 1

  experts = m.num_experts if m.use_moe else 1
  gate = [k for k in metrics if k.startswith("gate_load/")]
  assert len(gate) == (experts if m.use_diffusion else 0)
  if gate:
    np.testing.assert_allclose(sum(metrics[k] for k in gate), 1.0, rtol=1e-5)

  if not m.use_diffusion:
    # The guesser alone is the generator: sampling is deterministic, whatever the key.
    _, _, again, _ = run(state, batch, jax.random.key(5))
    np.testing.assert_allclose(again, x0_hat, rtol=1e-6)
  if m.conditioning == "collab_only":
    # No semantic input: clues and summary cannot move the sample.
    other = dict(batch, clue=_batch(config, seed=9)["clue"], summary=-batch["summary"])
    _, _, again, _ = run(state, other, jax.random.key(0))
    np.testing.assert_allclose(again, x0_hat, rtol=1e-5, atol=1e-5)
  if m.conditioning == "semantic_only":
    # No collaborative input: source ID embeddings (seen only by the source encoder) cannot either.
    state2 = jax.tree.map(lambda x: x, state)
    ids = state2["src_table"]["id_embedding"]
    ids.set_value(ids[...] + jax.random.normal(jax.random.key(1), ids.shape))
    _, _, again, _ = run(state2, batch, jax.random.key(0))
    np.testing.assert_allclose(again, x0_hat, rtol=1e-5, atol=1e-5)
    other = dict(batch, clue=_batch(config, seed=9)["clue"])
    _, _, moved, _ = run(state, other, jax.random.key(0))
    assert not np.allclose(moved, x0_hat)


def test_pseudo_rows_are_downweighted_and_padding_rows_are_ignored():
  # Reuses the default model's compiled function; train=True there, but with dropout off.
  config, run, state = _compiled("default")
  # Same pathway embedding for both pathways, so only the loss weighting tells them apart.
  state = jax.tree.map(lambda x: x, state)
  emb = state["pathway"]["embedding"]
  emb.set_value(jnp.stack([emb[...][1], emb[...][1]]))
  metrics = lambda b: run(state, b, jax.random.key(0))[1]
  batch = _batch(config)
  real = metrics(dict(batch, real=np.ones(B, np.int32)))
  pseudo = metrics(dict(batch, real=np.zeros(B, np.int32)))
  for key in ("loss", "rec_loss", "diffusion_loss", "guesser_loss", "guesser_rec_loss",
              "alignment_loss"):
    np.testing.assert_allclose(pseudo[key], config.train.pseudo_weight * real[key], rtol=1e-5)

  # Whatever a padding row (weight 0) holds, no metric moves.
  junk = _batch(config, seed=3)
  padded = {k: np.concatenate([v[:-1], junk[k][-1:]]) for k, v in batch.items()}
  again = metrics(padded)
  for key, value in metrics(batch).items():
    np.testing.assert_allclose(again[key], value, rtol=1e-5, atol=1e-6)

  # A row without any target item has no x0: it counts as padding.
  no_target = dict(batch, tgt=batch["tgt"].copy())
  no_target["tgt"][0] = 0
  as_padding = dict(batch, weight=batch["weight"].copy())
  as_padding["weight"][0] = 0.0
  a, b = metrics(no_target), metrics(as_padding)
  assert a["rows"] == B - 2
  for key, value in b.items():
    np.testing.assert_allclose(a[key], value, rtol=1e-5, atol=1e-6)


def test_clue_pooled_is_the_similarity_weighted_mean_of_clue_item_features():
  config = _config()
  model = _model(config)
  batch = _batch(config)
  batch["clue"][0] = 0  # a user without clue items pools to zeros
  cond = model.conditions(batch)
  feats = np.asarray(model.tgt_table(batch["clue"]))
  w = np.where(batch["clue"] > 0, batch["clue_sim"], 0.0)
  expected = (feats * w[..., None]).sum(1) / np.maximum(w.sum(1, keepdims=True), 1e-6)
  np.testing.assert_allclose(cond.clue_pooled, expected, rtol=1e-5, atol=1e-6)
  assert not np.asarray(cond.clue_pooled[0]).any()
  # The collaborative-only ablation sees no clue at all.
  collab = _model(_config(conditioning="collab_only")).conditions(batch)
  assert not np.asarray(collab.clue_pooled).any()


def test_x0_items_is_the_weighted_mean_of_the_target_items_features():
  """model.x0 = "items": x0 is the tgt_weight-weighted mean of the target items' features (padding
  and zero-weight items left out), without a gradient into the table; "encoder" is Enc_T's state."""
  batch = _batch(_config())
  batch["tgt_weight"][1, -1] = 0.0  # a zero-weight item does not count
  model = _model(_config(x0="items"))
  feats = model.tgt_table.features()
  x0 = model.target_repr(batch["tgt"], batch["tgt_weight"], feats)
  f = np.asarray(feats)[batch["tgt"]]
  w = np.where(batch["tgt"] > 0, batch["tgt_weight"], 0.0)
  np.testing.assert_allclose(x0, (f * w[..., None]).sum(1) / w.sum(1, keepdims=True), rtol=1e-5,
                             atol=1e-6)
  grad = jax.grad(lambda t: jnp.sum(model.target_repr(batch["tgt"], batch["tgt_weight"], t)))(feats)
  assert not np.asarray(grad).any()
  enc = _model(_config())
  assert not np.allclose(enc.target_repr(batch["tgt"], batch["tgt_weight"], feats), x0)
  with pytest.raises(ValueError, match="model.x0"):
    _model(_config(x0="sequence"))


def test_item_bias_shifts_every_users_score_of_an_item():
  model = _model(_config(item_bias=True))
  x0_hat = jnp.asarray(np.random.RandomState(0).randn(3, 16), jnp.float32)
  plain = np.asarray(model.score(x0_hat))
  model.tgt_bias.set_value(model.tgt_bias[...].at[4].set(2.5))
  shifted = np.asarray(model.score(x0_hat))
  np.testing.assert_allclose(shifted[:, 4], plain[:, 4] + 2.5, rtol=1e-6)
  np.testing.assert_allclose(np.delete(shifted, 4, 1), np.delete(plain, 4, 1))
  assert _model(_config(item_bias=False)).tgt_bias is None  # off: scores are <x0_hat, e_i>


def test_encoder_loss_under_jit():
  config = _config()
  model = _model(config)
  graphdef, state = nnx.split(model)
  rs = np.random.RandomState(0)
  length = config.data.maxlen + 1

  def seq_batch(n_items):
    seq = rs.randint(1, n_items + 1, (4, length)).astype(np.int32)
    seq[0, :5] = 0
    return {"seq": seq, "weight": np.array([1, 1, 1, 0], np.float32)}

  fn = jax.jit(lambda s, a, b, r: nnx.merge(graphdef, s).encoder_loss(a, b, r))
  loss, metrics = fn(state, seq_batch(NUM_SRC), seq_batch(NUM_TGT), jax.random.key(0))
  assert np.isfinite(loss) and loss > 0
  np.testing.assert_allclose(loss, metrics["encoder_loss/src"] + metrics["encoder_loss/tgt"],
                             rtol=1e-6)


def test_joint_loss_adds_the_weighted_encoder_loss_to_the_pair_loss():
  config = _config()
  config.train.joint_encoder_weight = 0.5
  model = _model(config)
  rs = np.random.RandomState(1)
  seq = lambda n: {"seq": rs.randint(1, n + 1, (4, config.data.maxlen + 1)).astype(np.int32),
                   "weight": np.ones(4, np.float32)}
  batch, batch_src, batch_tgt = _batch(config), seq(NUM_SRC), seq(NUM_TGT)
  rng = jax.random.key(3)
  total, metrics = model.joint_loss(batch, batch_src, batch_tgt, rng)
  r_pair, r_enc = jax.random.split(rng)  # the split joint_loss documents
  pair, _ = model.loss(batch, r_pair)
  enc, _ = model.encoder_loss(batch_src, batch_tgt, r_enc)
  np.testing.assert_allclose(total, pair + 0.5 * enc, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], total, rtol=1e-6)
  assert set(metrics) >= {"rec_loss", "encoder_loss/src", "encoder_loss/tgt"}


def _overfit_data(config, users: int = 8):
  """Users with distinct source histories and one distinct target item each."""
  rs = np.random.RandomState(0)
  maxlen, clue_len, text_dim = config.data.maxlen, config.data.clue_len, config.clues.text_dim
  src = np.zeros((users, maxlen), np.int32)
  for u in range(users):
    src[u, -3:] = 3 * u + np.arange(1, 4)  # Items 3u..3u+2 (inputs +1), left-padded.
  labels = rs.permutation(NUM_TGT)[:users]
  tgt = np.zeros((users, maxlen), np.int32)
  tgt[:, -1] = labels + 1
  clue = rs.randint(1, NUM_TGT + 1, (users, clue_len)).astype(np.int32)  # Noise clues.
  train = dict(src=src, tgt=tgt, tgt_weight=(tgt > 0).astype(np.float32), clue=clue,
               clue_sim=rs.rand(users, clue_len).astype(np.float32),
               summary=rs.randn(users, text_dim).astype(np.float32),
               has_summary=np.ones(users, np.float32), real=np.ones(users, np.int32),
               weight=np.ones(users, np.float32), user=np.arange(users, dtype=np.int32))
  evaluation = {k: train[k] for k in ("src", "clue", "clue_sim", "summary", "has_summary")}
  return train, evaluation, labels


def test_tiny_model_overfits_and_frozen_titles_stay_put():
  config = _config()
  model = _model(config)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  assert "title_embedding" not in nnx.state(model, nnx.Param)["tgt_table"]
  assert isinstance(model.tgt_table.title_embedding, FrozenEmbedding)
  titles_before = np.asarray(model.tgt_table.title_embedding[...]).copy()
  proj_before = np.asarray(model.tgt_table.title_proj.kernel[...]).copy()
  train, evaluation, labels = _overfit_data(config)

  graphdef, state = nnx.split((model, optimizer))

  @jax.jit
  def step(state, rng):
    m, opt = nnx.merge(graphdef, state)
    (loss, _), grads = nnx.value_and_grad(lambda m: m.loss(train, rng), has_aux=True)(m)
    opt.update(m, grads)
    # x0 is a stop-gradient target: the diffusion objectives never reach the target encoder.
    tgt_enc_grad = optax.tree.norm(nnx.state(grads["tgt_encoder"], nnx.Param))
    return nnx.state((m, opt)), loss, tgt_enc_grad

  @jax.jit
  def recommend(state, rng):
    m, _ = nnx.merge(graphdef, state)
    return m.score(m.sample(evaluation, rng, sampler="ddim"))

  losses = []
  for i in range(150):
    state, loss, tgt_enc_grad = step(state, jax.random.key(i))
    assert tgt_enc_grad == 0.0
    losses.append(float(loss))
  assert losses[-1] < 0.2 * losses[0]
  scores = np.asarray(recommend(state, jax.random.key(1234)))
  np.testing.assert_array_equal(scores.argmax(-1), labels)  # HR@1 = 1 for every user.

  nnx.update(model, state[0])
  np.testing.assert_array_equal(model.tgt_table.title_embedding[...], titles_before)
  assert not np.allclose(model.tgt_table.title_proj.kernel[...], proj_before)


def test_dmcdr_scores_do_not_depend_on_the_clue():
  """DMCDR (DESIGN.md §2) is guided by the source behaviour only: no clue token, summary or pooled
  clue may reach the denoiser, the gate or the guesser."""
  from lgcd_jax import builder
  from lgcd_jax.model.lgcd import uses_clues
  base = _config()
  base.method = "dmcdr"
  config = builder.method_config(base)
  assert not uses_clues(config) and config.model.conditioning == "cfg"
  assert uses_clues(builder.method_config(_config()))  # lgcd reads clues
  for method in ("dmcdr", "emcdr"):  # the anchor, x0 = items, from-guess training are LGCD's
    anchored = _config(anchor="mf", x0="items")
    anchored.method = method
    anchored.train.from_guess_share = 0.5
    c = builder.method_config(anchored)
    assert (c.model.anchor, c.model.x0, c.train.from_guess_share) == ("none", "encoder", 0.0)
  lgcd = _config(anchor="mf", x0="items")
  lgcd.train.from_guess_share = 0.5
  c = builder.method_config(lgcd)
  assert (c.model.anchor, c.model.x0, c.train.from_guess_share) == ("mf", "items", 0.5)
  graphdef, state = nnx.split(_model(config))
  runner = _runner(graphdef)

  def run(state, batch, rng):
    loss, _, _, scores, cond = runner(state, batch, rng)
    return loss, scores, cond.clue_pooled, cond.sem_pooled

  batch = _batch(config)
  other = dict(batch)
  rs = np.random.RandomState(7)
  other["clue"] = rs.randint(1, NUM_TGT + 1, batch["clue"].shape).astype(np.int32)
  other["clue_sim"] = rs.rand(*batch["clue_sim"].shape).astype(np.float32)
  other["summary"] = rs.randn(*batch["summary"].shape).astype(np.float32)
  other["has_summary"] = np.ones_like(batch["has_summary"])
  rng = jax.random.key(3)
  loss_a, scores_a, clue_a, sem_a = run(state, batch, rng)
  loss_b, scores_b, clue_b, sem_b = run(state, other, rng)
  assert not np.asarray(clue_a).any() and not np.asarray(clue_b).any()
  np.testing.assert_array_equal(np.asarray(sem_a), np.asarray(sem_b))
  np.testing.assert_array_equal(np.asarray(scores_a), np.asarray(scores_b))
  assert float(loss_a) == float(loss_b)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_untrained_mf_anchor_ranks_as_the_fold_in_and_learns_position_weights(sampler):
  """model.anchor = "mf": before training, the gates on what the networks add are zero and the title
  projections silent, so the sampled x0_hat is the sum of the source rows (the MF fold-in when the
  tables hold the MF's factors) whatever the sampler, noise or clue; the position weights then
  reweight the sequence, most recent item last."""
  c = _config(anchor="mf", item_bias=False)
  rs = np.random.RandomState(3)
  src_init = rs.randn(NUM_SRC, c.model.d).astype(np.float32)
  tgt_init = rs.randn(NUM_TGT, c.model.d).astype(np.float32)
  text_dim = c.clues.text_dim
  model = LGCD(c, NUM_SRC, NUM_TGT, _titles(NUM_SRC, text_dim, 1), _titles(NUM_TGT, text_dim, 2),
               rngs=nnx.Rngs(0), src_id_init=src_init, tgt_id_init=tgt_init)
  batch = _batch(c)
  counts = np.zeros((B, NUM_SRC + 1))
  for row, items in enumerate(batch["src"]):
    np.add.at(counts[row], items, 1.0)
  want = counts[:, 1:] @ src_init @ tgt_init.T
  for seed in (0, 1):
    got = model.score(model.sample(batch, jax.random.key(seed), sampler=sampler))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-3)

  decay = 0.5 ** np.arange(c.data.maxlen)[::-1]  # weight 1 for the last column, halving backwards
  model.anchor_position[...] = jnp.asarray(np.log(np.expm1(decay)), jnp.float32)
  weighted = np.stack([(decay[:, None] * np.vstack([np.zeros(c.model.d), src_init])[row]).sum(0)
                       for row in batch["src"]])
  np.testing.assert_allclose(np.asarray(model.anchor(jnp.asarray(batch["src"]))), weighted,
                             rtol=1e-4, atol=1e-4)


def test_anchor_recency_sets_the_initial_position_weights():
  """model.anchor_recency = g starts the anchor at weights g ** i for the i-th most recent source
  item (the last column weighs 1), so the untrained anchor is the recency-weighted MF fold-in."""
  c = _config(anchor="mf", item_bias=False, anchor_recency=0.5)
  rs = np.random.RandomState(4)
  src_init = rs.randn(NUM_SRC, c.model.d).astype(np.float32)
  tgt_init = rs.randn(NUM_TGT, c.model.d).astype(np.float32)
  model = LGCD(c, NUM_SRC, NUM_TGT, None, None, rngs=nnx.Rngs(0), src_id_init=src_init,
               tgt_id_init=tgt_init)
  decay = 0.5 ** np.arange(c.data.maxlen)[::-1]
  np.testing.assert_allclose(np.asarray(jax.nn.softplus(model.anchor_position[...])), decay,
                             rtol=1e-5, atol=1e-30)
  batch = _batch(c)
  weighted = np.stack([(decay[:, None] * np.vstack([np.zeros(c.model.d), src_init])[row]).sum(0)
                       for row in batch["src"]])
  np.testing.assert_allclose(np.asarray(model.anchor(jnp.asarray(batch["src"]))), weighted,
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="anchor_recency"):
    LGCD(_config(anchor="mf", anchor_recency=0.0), NUM_SRC, NUM_TGT, None, None, rngs=nnx.Rngs(0))


def test_anchor_at_sampling_initial_samples_with_the_untrained_profile():
  """model.anchor_at_sampling = "initial": training's anchor uses the trained weights, the sampler
  the anchor_recency profile at scale 1, so a sample equals that of the same model with its anchor
  parameters reset; "trained" samples with the trained ones."""
  rs = np.random.RandomState(6)
  src_init = rs.randn(NUM_SRC, 16).astype(np.float32)
  tgt_init = rs.randn(NUM_TGT, 16).astype(np.float32)
  def make(at_sampling):
    c = _config(anchor="mf", item_bias=False, anchor_recency=0.5, anchor_at_sampling=at_sampling)
    m = LGCD(c, NUM_SRC, NUM_TGT, None, None, rngs=nnx.Rngs(0), src_id_init=src_init,
             tgt_id_init=tgt_init)
    m.residual_gate[...] = jnp.asarray([0.3, -0.2])  # the networks' output reaches the sample
    return c, m
  c, initial = make("initial")
  _, trained = make("trained")
  assert c.model.d == 16
  batch = _batch(c)
  key = jax.random.key(0)
  reference = np.asarray(trained.sample(batch, key))  # the untrained anchor
  for m in (initial, trained):  # "training" moves the anchor's parameters
    m.anchor_position[...] = m.anchor_position[...] + jnp.linspace(-2.0, 1.0, c.data.maxlen)
    m.anchor_scale[...] = jnp.asarray(0.4)
  np.testing.assert_allclose(np.asarray(initial.sample(batch, key)), reference, rtol=1e-5,
                             atol=1e-5)
  assert not np.allclose(np.asarray(trained.sample(batch, key)), reference, atol=1e-3)
  src = jnp.asarray(batch["src"])
  np.testing.assert_allclose(np.asarray(initial.anchor(src)), np.asarray(trained.anchor(src)))
  with pytest.raises(ValueError, match="anchor_at_sampling"):
    make("fixed")


def test_residual_weight_penalises_what_the_networks_add_to_the_anchor():
  """train.residual_weight adds weight x residual_loss, the mean squared size of guess - anchor plus
  x0_hat - anchor; at initialisation (zero gates) the residual is zero, with open gates it is not."""
  c = _config(anchor="mf", item_bias=False)
  rs = np.random.RandomState(5)
  src_init = rs.randn(NUM_SRC, c.model.d).astype(np.float32)
  tgt_init = rs.randn(NUM_TGT, c.model.d).astype(np.float32)
  batch = _batch(c)
  losses = {}
  for weight in (0.0, 2.0):
    c.train.residual_weight = weight
    model = LGCD(c, NUM_SRC, NUM_TGT, None, None, rngs=nnx.Rngs(0), src_id_init=src_init,
                 tgt_id_init=tgt_init)
    _, closed = model.loss(batch, jax.random.key(1), train=False)
    assert float(closed["residual_loss"]) == 0.0
    model.residual_gate[...] = jnp.asarray([0.5, 0.3])
    losses[weight] = model.loss(batch, jax.random.key(1), train=False)
  residual = float(losses[2.0][1]["residual_loss"])
  assert residual > 0
  np.testing.assert_allclose(float(losses[2.0][0]) - float(losses[0.0][0]), 2.0 * residual,
                             rtol=1e-4)


def test_from_guess_share_feeds_the_denoiser_the_noised_guess():
  """train.from_guess_share = 1: every diffusion row's x_t is built from the guess, so moving the
  guesser changes the diffusion loss, but no gradient of it reaches the guesser (stop_gradient);
  at 0 the diffusion loss does not depend on the guesser at all."""
  def diffusion_losses(share):
    c = _config()
    c.train.from_guess_share = share
    graphdef, params, rest = nnx.split(_model(c), nnx.Param, ...)
    batch = _batch(c)

    @jax.jit
    def value_and_guesser_grad(shift):
      def loss(p):
        moved = jax.tree.map_with_path(
            lambda path, x: x + shift if "guesser" in jax.tree_util.keystr(path) else x, p)
        m = nnx.merge(graphdef, moved, rest)
        return m.loss(batch, jax.random.key(3), train=False)[1]["diffusion_loss"]
      value, grad = jax.value_and_grad(loss)(params)
      g = [jnp.max(jnp.abs(x)) for path, x in jax.tree_util.tree_leaves_with_path(grad)
           if "guesser" in jax.tree_util.keystr(path)]
      return value, jnp.max(jnp.stack(g))

    return [tuple(map(float, value_and_guesser_grad(shift))) for shift in (0.0, 0.3)]

  (a0, g0), (b0, _) = diffusion_losses(0.0)
  (a1, g1), (b1, _) = diffusion_losses(1.0)
  assert a0 == pytest.approx(b0, rel=1e-6) and g0 == 0.0
  assert abs(a1 - b1) > 1e-4 and g1 == 0.0
  assert a1 != pytest.approx(a0, rel=1e-4)  # share 1 changed the denoiser's inputs
  with pytest.raises(ValueError, match="from_guess_share"):
    c = _config()
    c.train.from_guess_share = 1.5
    _model(c)
