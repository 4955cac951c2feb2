"""Stage 2 does not move the target encoder: its parameters are bit-identical across the stage."""

import jax
import numpy as np
from flax import nnx

from conftest import TRAINED_TINY_OVERRIDES, tiny_config
from lgcd_jax import builder, sharding, train
from lgcd_jax.data import loading, pipeline


def _leaves(state, name):
  model, _ = nnx.merge(*state)
  return [np.array(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(getattr(model, name))))]


def test_target_encoder_is_bit_identical_across_stage_2(trained_tiny):
  config = tiny_config(**TRAINED_TINY_OVERRIDES)  # the trained run's shapes: compiles are cached
  ds = loading.load_dataset(config, trained_tiny[0])
  setup = builder.build(config, ds)
  c, g = setup.config, setup.graphdef
  put = lambda b: sharding.put_batch(setup.mesh, b)
  key = jax.random.key(0)
  seq = [pipeline.sequence_dataset(ds, d, c.data.maxlen, c.data.batch_size, c.seed + i)
         for i, d in enumerate("AB")]
  state = setup.state
  start = _leaves((g, state), "tgt_encoder")
  for step in range(c.train.encoder_steps):
    state, _ = train.encoder_step(g, state, put(seq[0][step]), put(seq[1][step]),
                                  jax.random.fold_in(key, step))
  after_stage_1 = _leaves((g, state), "tgt_encoder")
  denoiser_before = _leaves((g, state), "denoiser")
  assert any(not np.array_equal(a, b) for a, b in zip(start, after_stage_1))  # stage 1 trains it

  pools = pipeline.PairPools.build(ds, c.direction, setup.clues, maxlen=c.data.maxlen,
                                   clue_len=c.data.clue_len, text_dim=c.clues.text_dim)
  data = pipeline.train_dataset(pools, c.data.batch_size, c.seed, use_pseudo=True)
  for i in range(4):
    state, _ = train.train_step(g, state, put(data[i]),
                                jax.random.fold_in(key, c.train.encoder_steps + i))
  for a, b in zip(after_stage_1, _leaves((g, state), "tgt_encoder")):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b)  # while the rest of the model trains
             for a, b in zip(denoiser_before, _leaves((g, state), "denoiser")))


def test_joint_fine_tuning_still_trains_the_target_encoder_in_stage_2():
  opt = builder.make_optimizer(tiny_config(**{"train.joint_encoder_weight": 1.0}))
  frozen = builder.make_optimizer(tiny_config())
  params = {"tgt_encoder": {"w": np.ones(2, np.float32)}, "other": {"w": np.ones(2, np.float32)}}
  grads = jax.tree.map(lambda x: x * 0.5, params)
  for tx, moves in ((opt, True), (frozen, False)):
    state = tx.init(params)
    for _ in range(tiny_config().train.encoder_steps + 2):
      updates, state = tx.update(grads, state, params)
    assert bool(np.any(np.asarray(updates["tgt_encoder"]["w"]) != 0)) == moves
    assert np.any(np.asarray(updates["other"]["w"]) != 0)


def test_anchor_lr_scale_speeds_up_only_the_anchor_parameters():
  """train.anchor_lr_scale multiplies the updates of the anchor's parameters and nothing else."""
  import jax.numpy as jnp
  params = {"anchor_position": jnp.zeros(3), "anchor_scale": jnp.zeros(()),
            "denoiser": {"w": jnp.zeros(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  steps = {}
  for scale in (1.0, 10.0):
    c = tiny_config(**{"train.anchor_lr_scale": scale, "train.warmup_steps": 1})
    tx = builder.make_optimizer(c)
    state = tx.init(params)
    for _ in range(2):
      updates, state = tx.update(grads, state, params)
    steps[scale] = updates
  np.testing.assert_allclose(steps[10.0]["anchor_position"], 10 * steps[1.0]["anchor_position"],
                             rtol=1e-6)
  np.testing.assert_allclose(steps[10.0]["anchor_scale"], 10 * steps[1.0]["anchor_scale"], rtol=1e-6)
  np.testing.assert_array_equal(steps[10.0]["denoiser"]["w"], steps[1.0]["denoiser"]["w"])
  assert float(jnp.abs(steps[1.0]["anchor_scale"])) > 0


def test_stage2_frozen_keeps_the_named_parameters_after_stage_1():
  """train.stage2_frozen: the named parameters (dotted path prefixes) move in stage 1 and get zero
  updates from stage 2 on; the others keep training; the target encoder stays frozen as before."""
  c = tiny_config(**{"train.stage2_frozen": "src_table.id_embedding, tgt_table"})
  tx = builder.make_optimizer(c)
  params = {"src_table": {"id_embedding": np.ones(2, np.float32), "title_proj": np.ones(2, np.float32)},
            "tgt_table": {"id_embedding": np.ones(2, np.float32)},
            "tgt_encoder": {"w": np.ones(2, np.float32)}, "denoiser": {"w": np.ones(2, np.float32)}}
  grads = jax.tree.map(lambda x: x * 0.5, params)
  state = tx.init(params)
  moved = lambda u: bool(np.any(np.asarray(u) != 0))
  for step in range(c.train.encoder_steps + 2):
    updates, state = tx.update(grads, state, params)
    if step == 0:
      continue  # the warm-up's first rate is 0
    stage1 = step < c.train.encoder_steps
    assert moved(updates["src_table"]["id_embedding"]) == stage1
    assert moved(updates["tgt_table"]["id_embedding"]) == stage1
    assert moved(updates["tgt_encoder"]["w"]) == stage1
    assert moved(updates["src_table"]["title_proj"]) and moved(updates["denoiser"]["w"])
