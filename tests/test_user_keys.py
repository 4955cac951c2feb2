"""A user's sampling noise comes from its own key: scores do not depend on its row, batch or neighbours."""

import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from lgcd_jax import builder, checkpoint, train, user_keys
from lgcd_jax.data import loading
from lgcd_jax.model import diffusion
from lgcd_jax.recommend import Recommender


def test_a_rows_sample_does_not_depend_on_the_other_rows():
  schedule = diffusion.make_schedule("cosine", 10)
  denoise = lambda x, t: 0.5 * x
  key = jax.random.key(3)
  guess = jax.random.normal(jax.random.key(1), (4, 6))
  ids = jnp.asarray(user_keys.noise_ids(["a", "b", "c", "d"]))
  for sample in (lambda rng, x: diffusion.ddim_sample(denoise, schedule, rng, num_steps=3,
                                                       x_start=x, start_step=5, eta=1.0),
                 lambda rng, x: diffusion.ddpm_sample(denoise, schedule, rng, x_start=x,
                                                      start_step=5)):
    full = sample(user_keys.row_keys(key, ids), guess)
    alone = sample(user_keys.row_keys(key, ids[2:3]), guess[2:3])
    reordered = sample(user_keys.row_keys(key, ids[::-1]), guess[::-1])
    np.testing.assert_allclose(full[2:3], alone, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(full[::-1], reordered, rtol=1e-6, atol=1e-6)
    assert not np.allclose(full[0], full[1])  # rows still get different noise


def test_noise_ids_are_stable():
  assert user_keys.noise_id("7") == user_keys.noise_id(7)
  assert user_keys.noise_ids(["u1", "u2"]).dtype == np.uint32
  assert user_keys.noise_id("u1") != user_keys.noise_id("u2")
  assert user_keys.noise_id("u1") == 3032739940  # the same in every process and version


def _restored(workdir, config):
  ds = loading.load_dataset(config, workdir)
  setup = builder.build(config, ds)
  state = checkpoint.Checkpointer(workdir).restore("best", setup.state)[0]
  return setup, state


def test_eval_metrics_do_not_depend_on_the_eval_batch_size(trained_tiny):
  workdir, _ = trained_tiny
  results = []
  for eval_batch_size in (64, 24):
    setup, state = _restored(workdir, tiny_config(**{"data.eval_batch_size": eval_batch_size}))
    results.append(train.evaluate_split(setup, state, "valid"))
  for proto in ("sampled", "full"):
    assert results[0][proto] == pytest.approx(results[1][proto], abs=1e-6), proto


def test_served_users_get_the_same_output_on_any_line_and_batch_size(trained_tiny):
  workdir, _ = trained_tiny
  config = tiny_config()
  ds = loading.load_dataset(config, workdir)
  users = ds.eval[config.direction]["valid"]
  lines = [json.dumps({"user": f"u{u}", "source_items": [str(ds.item_ids["A"][i]) for i in seq]})
           for u, seq in list(zip(users.user_ids, users.source))[:20]]
  shuffled = lines[:]
  random.Random(0).shuffle(shuffled)

  def serve(batch_size, lines):
    rec = Recommender(workdir=str(workdir), batch_size=batch_size)
    return {o["user"]: o for o in rec.serve_lines(lines, topk=5)}

  a, b = serve(8, lines), serve(3, shuffled)
  assert set(a) == set(b) and len(a) == 20
  for user in a:
    assert a[user]["items"] == b[user]["items"], user
    np.testing.assert_allclose(a[user]["scores"], b[user]["scores"], rtol=1e-5, atol=1e-5)
