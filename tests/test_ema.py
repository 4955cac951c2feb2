"""The weight average (train.ema_decay): its arithmetic, the swap, and a run that uses it end to end."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from lgcd_jax import builder, ema, experiment, train
from lgcd_jax.data import loading


class _Tiny(nnx.Module):
  def __init__(self, rngs):
    self.a = nnx.Linear(2, 3, rngs=rngs)
    self.b = nnx.Linear(3, 1, rngs=rngs)

  def __call__(self, x):
    return self.b(self.a(x))


def _loss(model, x):
  return (model(x) ** 2).mean()


def test_average_follows_the_warmed_up_recursion_by_hand():
  model = _Tiny(nnx.Rngs(0))
  decay, lr = 0.9, 0.1
  opt = nnx.Optimizer(model, optax.chain(optax.sgd(lr), ema.track(decay)), wrt=nnx.Param)
  x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
  expected = np.asarray(model.a.kernel[...]).copy()
  for n in range(6):
    opt.update(model, nnx.grad(_loss)(model, x))
    d = min(decay, (1 + n) / (10 + n))
    expected = d * expected + (1 - d) * np.asarray(model.a.kernel[...])
  average = nnx.to_pure_dict(nnx.state(opt))["opt_state"][1]["ema"]["a"]["kernel"]
  np.testing.assert_allclose(average, expected, rtol=1e-6)
  assert not np.allclose(average, model.a.kernel[...])  # it lags the weights


def test_swap_exchanges_weights_and_average_and_twice_is_the_identity():
  model = _Tiny(nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.chain(optax.adam(0.05), ema.track(0.5)), wrt=nnx.Param)
  x = jnp.ones((4, 2))
  for _ in range(3):
    opt.update(model, nnx.grad(_loss)(model, x))
  state = nnx.state((model, opt))
  assert ema.has_average(state)
  pure = nnx.to_pure_dict(state)
  swapped = nnx.to_pure_dict(ema.swap(state))
  average = pure[1]["opt_state"][1]["ema"]
  for layer in ("a", "b"):
    for name in ("kernel", "bias"):
      np.testing.assert_array_equal(swapped[0][layer][name], average[layer][name])
      np.testing.assert_array_equal(swapped[1]["opt_state"][1]["ema"][layer][name],
                                    pure[0][layer][name])
  back = nnx.to_pure_dict(ema.swap(ema.swap(state)))
  jax.tree.map(np.testing.assert_array_equal, back, pure)
  # The input state is not changed, and a state without an average passes through.
  jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(state), pure)
  plain = nnx.state((model, nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)))
  assert not ema.has_average(plain) and ema.swap(plain) is plain


def test_decay_outside_the_open_interval_is_refused():
  for bad in (0.0, 1.0, -0.5, 1.5):
    with pytest.raises(ValueError, match="ema_decay"):
      ema.track(bad)


# 10 encoder + 10 diffusion steps, evaluated and saved every 5 (the fewest that show a resume).
EMA = {"train.ema_decay": 0.8, "train.encoder_steps": 10, "train.steps": 10, "train.eval_every": 5,
       "train.checkpoint_every": 5, "train.log_every": 5, "train.patience": 100}


def _states(workdir, like):
  ckpt = train.ckpt_lib.Checkpointer(workdir)
  out = {kind: ckpt.restore(kind, like) for kind in ("best", "latest")}
  ckpt.close()
  return out


def test_a_run_selects_and_keeps_the_average_and_resumes_from_a_best_checkpoint(tmp_path,
                                                                                 monkeypatch):
  config = tiny_config(**EMA)
  ref = tmp_path / "ref"
  res = experiment.run(config, ref)
  like = builder.build(config, loading.load_dataset(config, ref)).state
  states = _states(ref, like)
  (best, best_meta), (latest, latest_meta) = states["best"], states["latest"]
  assert best_meta["ema_in_model"] and not latest_meta["ema_in_model"]
  if best_meta["step"] == latest_meta["step"]:
    # The best checkpoint's model is the average of the raw weights `latest` trains on.
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(best),
                 nnx.to_pure_dict(ema.swap(latest)))
  raw, averaged = nnx.to_pure_dict(ema.swap(best))[0], nnx.to_pure_dict(best)[0]
  differ = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), raw, averaged))
  assert any(differ)  # the evaluated model is not the raw weights

  # Interrupted after the first evaluation (step 15 of 20), with only its `best` checkpoint left:
  # the resume must swap the raw weights back and end where the uninterrupted run ended.
  cut = tmp_path / "cut"
  calls = {"n": 0}
  step = train.train_step

  def stop_mid_run(*args):
    calls["n"] += 1
    if calls["n"] > 7:
      raise KeyboardInterrupt
    return step(*args)

  monkeypatch.setattr(train, "train_step", stop_mid_run)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, cut)
  monkeypatch.setattr(train, "train_step", step)
  latest_dir = cut / "checkpoints" / "latest"
  assert sorted(p.name for p in latest_dir.iterdir() if p.name.isdigit()) == ["15"]
  assert (cut / "checkpoints" / "best" / "15").is_dir()
  shutil.rmtree(latest_dir / "15")
  again = experiment.run(config, cut)
  assert again["best_step"] == res["best_step"] and again["steps_run"] == res["steps_run"] == 20
  assert again["valid"] == res["valid"] and again["test"] == res["test"]
  # The weights too, not only the coarse tiny metrics: resuming from the average would move them.
  final_ref, final_cut = _states(ref, like)["latest"][0], _states(cut, like)["latest"][0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               nnx.to_pure_dict(final_ref), nnx.to_pure_dict(final_cut))
  saved = json.loads((cut / "results.json").read_text())
  assert saved["config"]["train"]["ema_decay"] == 0.8


def test_config_check_names_a_decay_outside_the_range():
  from lgcd_jax import config_check
  from lgcd_jax.cli import UserError
  for ok in (0.0, 0.5, 0.999):
    config_check.validate(tiny_config(**{"train.ema_decay": ok}))
  for bad in (1.0, -0.1, 2.0):
    with pytest.raises(UserError, match="train.ema_decay"):
      config_check.validate(tiny_config(**{"train.ema_decay": bad}))
