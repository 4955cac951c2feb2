"""Tests for the diffusion math: schedules, forward noising, posterior, and the two reverse samplers."""

from __future__ import annotations

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from lgcd_jax.model import diffusion as dif

KINDS = ("linear", "cosine", "exp")
B, D = 3, 4


def _x0(seed: int = 0, shape=(B, D)) -> jnp.ndarray:
  return jax.random.normal(jax.random.PRNGKey(seed), shape) * 2.0 + 0.5


def _perfect(x0):
  """A denoiser that knows the answer: returns the true x0 whatever it is shown."""
  return lambda x_t, t: jnp.broadcast_to(x0, x_t.shape)


# An imperfect, step-dependent denoiser, with a float64 numpy twin for reference loops.
_W = np.array(jax.random.normal(jax.random.PRNGKey(7), (D, D)), np.float64) * 0.3
_BIAS = np.linspace(-1.0, 1.0, D)


def _affine_jax(num_train: int):
  def fn(x_t, t):
    assert t.shape == (x_t.shape[0],) and t.dtype == jnp.int32
    scale = 0.5 + 0.5 * t.astype(jnp.float32)[:, None] / num_train
    return scale * (x_t @ jnp.asarray(_W, jnp.float32)) + jnp.asarray(_BIAS, jnp.float32)
  return fn


def _affine_np(x_t: np.ndarray, t: int, num_train: int) -> np.ndarray:
  return (0.5 + 0.5 * t / num_train) * (x_t @ _W) + _BIAS


def _abar64(schedule: dif.Schedule) -> np.ndarray:
  """alphas_cumprod recomputed independently from the betas in float64."""
  return np.cumprod(1.0 - np.asarray(schedule.betas, np.float64))


# ---------------------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", KINDS)
def test_schedule_monotone_and_in_range(kind):
  s = dif.make_schedule(kind, 200)
  for name in s.__dataclass_fields__:
    v = getattr(s, name)
    assert v.shape == (200,) and v.dtype == jnp.float32, name
  betas, abar = np.asarray(s.betas), np.asarray(s.alphas_cumprod)
  assert np.all((betas > 0) & (betas < 1))
  assert np.all(np.diff(betas) >= -1e-7)  # Non-decreasing (float32 rounding aside).
  assert np.all((abar > 0) & (abar < 1))
  assert np.all(np.diff(abar) < 0)  # Strictly decreasing: every step adds noise.
  np.testing.assert_allclose(abar, _abar64(s), rtol=1e-4)  # _abar64 reads float32 betas.
  assert s.alphas_cumprod_prev[0] == 1.0
  np.testing.assert_allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
  assert s.posterior_variance[0] == 0.0  # The last reverse step adds no noise.
  assert np.all(np.asarray(s.posterior_variance[1:]) > 0)
  assert np.all(np.isfinite(np.asarray(s.posterior_log_variance_clipped)))
  assert s.num_steps == 200


def test_schedule_kinds_have_their_shape():
  lin = np.asarray(dif.make_schedule("linear", 50, 1e-4, 0.02).betas, np.float64)
  np.testing.assert_allclose(np.diff(lin), np.full(49, (0.02 - 1e-4) / 49), rtol=1e-4)
  exp = np.asarray(dif.make_schedule("exp", 50, 1e-4, 0.02).betas, np.float64)
  np.testing.assert_allclose([exp[0], exp[-1]], [1e-4, 0.02], rtol=1e-5)
  np.testing.assert_allclose(exp[1:] / exp[:-1], np.full(49, (0.02 / 1e-4) ** (1 / 49)), rtol=1e-4)
  cos = dif.make_schedule("cosine", 1000)
  assert np.isclose(float(cos.betas[-1]), 0.999)  # The clip is active at the very end.
  abar_ref = np.cos((np.arange(1, 1001) / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
  abar_ref /= np.cos(0.008 / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(cos.alphas_cumprod[:900], abar_ref[:900], rtol=1e-4, atol=1e-7)


def test_schedule_rejects_bad_arguments():
  with pytest.raises(ValueError, match="unknown beta schedule"):
    dif.make_schedule("quadratic", 10)
  with pytest.raises(ValueError, match="unknown beta schedule"):
    dif.make_schedule("Linear", 10)
  with pytest.raises(ValueError):
    dif.make_schedule("linear", 0)
  with pytest.raises(ValueError):
    dif.make_schedule("exp", 10, beta_start=0.0)
  with pytest.raises(ValueError):
    dif.make_schedule("linear", 10, beta_start=0.1, beta_end=0.01)


def test_schedule_is_a_pytree_usable_in_jit():
  s = dif.make_schedule("linear", 10)
  assert len(jax.tree_util.tree_leaves(s)) == 10
  doubled = jax.jit(lambda sch: jax.tree_util.tree_map(lambda v: 2 * v, sch))(s)
  assert isinstance(doubled, dif.Schedule)
  np.testing.assert_allclose(doubled.betas, 2 * s.betas)


# ------------------------------------------------------------------------------- forward / posterior

@pytest.mark.parametrize("kind", KINDS)
def test_q_sample_closed_form(kind):
  s = dif.make_schedule(kind, 100)
  x0 = _x0(1)
  noise = jax.random.normal(jax.random.PRNGKey(2), x0.shape)
  t = jnp.array([0, 37, 99], jnp.int32)
  ab = _abar64(s)[np.asarray(t)][:, None]
  expected = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(noise)
  np.testing.assert_allclose(dif.q_sample(s, x0, t, noise), expected, rtol=1e-5, atol=1e-6)


def test_q_sample_empirical_moments():
  s = dif.make_schedule("linear", 100)
  n, t_val = 20000, 60
  x0 = jnp.broadcast_to(jnp.array([1.5, -2.0]), (n, 2))
  noise = jax.random.normal(jax.random.PRNGKey(3), (n, 2))
  x_t = np.asarray(dif.q_sample(s, x0, jnp.full((n,), t_val, jnp.int32), noise))
  ab = _abar64(s)[t_val]
  # Tolerances are ~5 standard errors of the sample mean / variance.
  np.testing.assert_allclose(x_t.mean(0), np.sqrt(ab) * np.array([1.5, -2.0]), atol=0.04)
  np.testing.assert_allclose(x_t.var(0), np.full(2, 1 - ab), rtol=0.05)


def test_q_sample_preserves_dtype():
  s = dif.make_schedule("linear", 10)
  x0 = jnp.ones((2, 3), jnp.bfloat16)
  out = dif.q_sample(s, x0, jnp.array([0, 9]), jnp.zeros((2, 3), jnp.float32))
  assert out.dtype == jnp.bfloat16


@pytest.mark.parametrize("kind", KINDS)
def test_posterior_matches_hand_formulas(kind):
  s = dif.make_schedule(kind, 50)
  beta = np.asarray(s.betas, np.float64)
  ab = _abar64(s)
  x0, x_t = _x0(4), _x0(5)
  for t in (1, 25, 49):
    ab_prev = ab[t - 1]
    c1 = beta[t] * np.sqrt(ab_prev) / (1 - ab[t])
    c2 = (1 - ab_prev) * np.sqrt(1 - beta[t]) / (1 - ab[t])
    var = beta[t] * (1 - ab_prev) / (1 - ab[t])
    np.testing.assert_allclose(s.posterior_mean_coef1[t], c1, rtol=1e-5)
    np.testing.assert_allclose(s.posterior_mean_coef2[t], c2, rtol=1e-5)
    np.testing.assert_allclose(s.posterior_variance[t], var, rtol=1e-5)
    mean, v, logv = dif.q_posterior_mean_variance(s, x0, x_t, jnp.full((B,), t, jnp.int32))
    assert mean.shape == v.shape == logv.shape == x_t.shape
    np.testing.assert_allclose(mean, c1 * np.asarray(x0) + c2 * np.asarray(x_t), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(v, np.full(x_t.shape, var), rtol=1e-5)
    np.testing.assert_allclose(logv, np.full(x_t.shape, np.log(var)), rtol=1e-5)
  # At t=0 the previous state is clean: mean = x0 exactly, variance 0, log variance clipped to t=1's.
  mean, v, logv = dif.q_posterior_mean_variance(s, x0, x_t, jnp.zeros((B,), jnp.int32))
  np.testing.assert_allclose(mean, x0, rtol=1e-6, atol=1e-6)
  assert np.all(np.asarray(v) == 0)
  np.testing.assert_allclose(logv, np.full(x_t.shape, np.log(float(s.posterior_variance[1]))),
                             rtol=1e-5)


def test_training_targets():
  s = dif.make_schedule("cosine", 8)
  x0 = _x0(6, (512, 2))
  x_t, t, noise = dif.training_targets(s, x0, jax.random.PRNGKey(0))
  assert t.shape == (512,) and t.dtype == jnp.int32
  assert set(np.unique(np.asarray(t))) == set(range(8))  # Uniform over all T steps.
  np.testing.assert_allclose(x_t, dif.q_sample(s, x0, t, noise), rtol=1e-6)
  assert abs(float(noise.mean())) < 0.15 and abs(float(noise.std()) - 1) < 0.1
  x_t2, t2, _ = dif.training_targets(s, x0, jax.random.PRNGKey(1))
  assert not np.array_equal(np.asarray(t), np.asarray(t2))


def test_cfg_combine():
  cond, uncond = jnp.array([[1.0, 2.0]]), jnp.array([[0.5, -1.0]])
  np.testing.assert_allclose(dif.cfg_combine(cond, uncond, 1.0), cond)
  np.testing.assert_allclose(dif.cfg_combine(cond, uncond, 0.0), uncond)
  np.testing.assert_allclose(dif.cfg_combine(cond, uncond, 2.0), [[1.5, 5.0]])


# -------------------------------------------------------------------------------------- samplers

@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_perfect_denoiser_returns_x0(kind):
  # Stochastic sampling: noise is added at every step t >= 1, but at t=0 the posterior has
  # coefficient 1 on x0_hat, 0 on x_t and variance exactly 0, so the last step lands on x0.
  s = dif.make_schedule(kind, 30)
  assert float(s.posterior_variance[0]) == 0.0
  np.testing.assert_allclose(s.posterior_mean_coef1[0], 1.0, rtol=1e-6)
  assert float(s.posterior_mean_coef2[0]) == 0.0
  x0 = _x0(8)
  out = dif.ddpm_sample(_perfect(x0), s, jax.random.PRNGKey(0), shape=x0.shape)
  assert out.shape == x0.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, x0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_steps", [30, 7, 1])
def test_ddim_perfect_denoiser_returns_x0(kind, num_steps):
  s = dif.make_schedule(kind, 30)
  x0 = _x0(9)
  out = dif.ddim_sample(_perfect(x0), s, jax.random.PRNGKey(1), shape=x0.shape, num_steps=num_steps)
  np.testing.assert_allclose(out, x0, rtol=1e-6, atol=1e-6)
  out = dif.ddim_sample(_perfect(x0), s, jax.random.PRNGKey(1), shape=x0.shape, num_steps=num_steps,
                        eta=0.7)
  np.testing.assert_allclose(out, x0, rtol=1e-6, atol=1e-6)


def test_ddpm_deterministic_matches_reference_loop():
  # The posterior-mean path (no per-step noise) recomputed in float64 with the same start.
  num_train = 20
  s = dif.make_schedule("linear", num_train, 1e-3, 0.2)
  rng = jax.random.PRNGKey(3)
  out = dif.ddpm_sample(_affine_jax(num_train), s, rng, shape=(B, D), deterministic=True)
  x = np.asarray(dif.reverse_start(s, jax.random.split(rng)[0], shape=(B, D)), np.float64)
  beta, ab = np.asarray(s.betas, np.float64), _abar64(s)
  for t in range(num_train - 1, -1, -1):
    ab_prev = ab[t - 1] if t > 0 else 1.0
    x0_hat = _affine_np(x, t, num_train)
    x = (beta[t] * np.sqrt(ab_prev) / (1 - ab[t]) * x0_hat
         + (1 - ab_prev) * np.sqrt(1 - beta[t]) / (1 - ab[t]) * x)
  np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)
  # Switching the noise on changes the result: the stochastic path really draws noise.
  noisy = dif.ddpm_sample(_affine_jax(num_train), s, rng, shape=(B, D))
  assert np.max(np.abs(np.asarray(noisy) - x)) > 1e-2


@pytest.mark.parametrize("start_step,num_steps", [(None, 5), (12, 4), (20, 20)])
def test_ddim_eta0_matches_reference_loop(start_step, num_steps):
  num_train = 20
  s = dif.make_schedule("linear", num_train, 1e-3, 0.2)
  rng = jax.random.PRNGKey(4)
  guess = _x0(10) if start_step is not None else None
  shape = None if guess is not None else (B, D)
  out = dif.ddim_sample(_affine_jax(num_train), s, rng, shape=shape, x_start=guess,
                        start_step=start_step, num_steps=num_steps)
  t_start = start_step or num_train
  taus = dif.ddim_timesteps(t_start, num_steps)
  assert taus[-1] == t_start - 1 and taus[0] == 0 and len(taus) == num_steps
  assert np.all(np.diff(taus) > 0)
  x = np.asarray(dif.reverse_start(s, jax.random.split(rng)[0], shape=shape, x_start=guess,
                                   start_step=start_step), np.float64)
  ab = _abar64(s)
  for i in range(num_steps - 1, -1, -1):
    t = taus[i]
    ab_prev = ab[taus[i - 1]] if i > 0 else 1.0
    x0_hat = _affine_np(x, t, num_train)
    eps_hat = (x - np.sqrt(ab[t]) * x0_hat) / np.sqrt(1 - ab[t])
    x = np.sqrt(ab_prev) * x0_hat + np.sqrt(1 - ab_prev) * eps_hat
  np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)


def _eqns(jaxpr):
  """Every equation of jaxpr, those of inner jaxprs (jit, scan bodies, vmap) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def _scan_draws_random_bits(jaxpr) -> bool:
  scans = [e for e in _eqns(jaxpr) if e.primitive.name == "scan"]
  assert len(scans) == 1
  return any(e.primitive.name == "random_bits" for e in _eqns(scans[0].params["jaxpr"].jaxpr))


@pytest.mark.parametrize("row_keys", [False, True])
def test_ddim_eta0_draws_no_step_noise_and_gives_the_noisy_path_at_eta_0(row_keys):
  # eta = 0 as a number skips the per-step noise; a traced eta of 0 takes the general path, whose
  # sigma * z is 0: the two must agree (up to float rounding), with one key or per-row keys.
  num_train = 20
  s = dif.make_schedule("linear", num_train, 1e-3, 0.2)
  rng = jax.random.split(jax.random.PRNGKey(3), B) if row_keys else jax.random.PRNGKey(3)
  fn = _affine_jax(num_train)
  skip = jax.jit(lambda r: dif.ddim_sample(fn, s, r, x_start=_x0(1), start_step=12, num_steps=4))
  general = jax.jit(lambda r, eta: dif.ddim_sample(fn, s, r, x_start=_x0(1), start_step=12,
                                                   num_steps=4, eta=eta))
  np.testing.assert_allclose(skip(rng), general(rng, jnp.float32(0.0)), rtol=1e-6, atol=1e-6)
  assert not _scan_draws_random_bits(jax.make_jaxpr(skip)(rng).jaxpr)
  assert _scan_draws_random_bits(jax.make_jaxpr(general)(rng, jnp.float32(0.0)).jaxpr)
  assert np.max(np.abs(np.asarray(general(rng, jnp.float32(1.0)) - skip(rng)))) > 1e-3


@pytest.mark.parametrize("row_keys", [False, True])
def test_ddpm_noise_drawn_before_the_loop_equals_noise_drawn_per_step(row_keys, monkeypatch):
  num_train = 12
  s = dif.make_schedule("linear", num_train, 1e-3, 0.2)
  rng = jax.random.split(jax.random.PRNGKey(8), B) if row_keys else jax.random.PRNGKey(8)
  fn = _affine_jax(num_train)
  # A new function for each setting: JAX caches a function's trace, and the setting is a global.
  sample = lambda: (lambda r: dif.ddpm_sample(fn, s, r, shape=(B, D)))
  predrawn = jax.jit(sample())(rng)
  assert _scan_draws_random_bits(jax.make_jaxpr(sample())(rng).jaxpr) is False
  monkeypatch.setattr(dif, "PREDRAW_NOISE_BYTES", 0)
  assert _scan_draws_random_bits(jax.make_jaxpr(sample())(rng).jaxpr) is True
  np.testing.assert_allclose(predrawn, jax.jit(sample())(rng), rtol=1e-5, atol=1e-6)


def test_ddim_full_steps_vs_ddpm():
  """Which DDIM/DDPM relations hold with S = T, and which do not.

  DDIM steps x' = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat + sigma z with
  sigma^2 = eta^2 (1 - abar')/(1 - abar) (1 - abar/abar'). With S = T, abar/abar' = alpha_t, so for
  eta = 1 sigma^2 is the DDPM posterior variance, and substituting eps_hat shows the mean is exactly
  the posterior mean coef1 x0_hat + coef2 x_t. Both samplers draw the start and the per-step noise
  from the same keys, hence (1): DDIM(S=T, eta=1) == DDPM (stochastic), for any denoiser.
  For eta = 0 the coefficient of x_t is sqrt(1 - abar')/sqrt(1 - abar), not
  coef2 = (1 - abar') sqrt(alpha_t)/(1 - abar), so (2): DDIM(S=T, eta=0) is NOT the DDPM
  posterior-mean path (deterministic=True) for a general denoiser; (3) the two agree when the
  denoiser is perfect, since both then return x0.
  """
  num_train = 25
  s = dif.make_schedule("linear", num_train, 1e-3, 0.2)
  fn = _affine_jax(num_train)
  rng = jax.random.PRNGKey(5)
  ddpm = dif.ddpm_sample(fn, s, rng, shape=(B, D))
  ddim1 = dif.ddim_sample(fn, s, rng, shape=(B, D), num_steps=num_train, eta=1.0)
  np.testing.assert_allclose(ddim1, ddpm, rtol=1e-4, atol=1e-5)  # (1)
  other = dif.ddpm_sample(fn, s, jax.random.PRNGKey(6), shape=(B, D))
  assert np.max(np.abs(np.asarray(other) - np.asarray(ddpm))) > 1e-2  # (1) is not vacuous.
  # (1) also holds from a partly noised guess.
  guess = _x0(11)
  np.testing.assert_allclose(
      dif.ddim_sample(fn, s, rng, x_start=guess, start_step=9, num_steps=9, eta=1.0),
      dif.ddpm_sample(fn, s, rng, x_start=guess, start_step=9), rtol=1e-4, atol=1e-5)

  ddpm_det = dif.ddpm_sample(fn, s, rng, shape=(B, D), deterministic=True)
  ddim0 = dif.ddim_sample(fn, s, rng, shape=(B, D), num_steps=num_train, eta=0.0)
  assert np.max(np.abs(np.asarray(ddim0) - np.asarray(ddpm_det))) > 1e-3  # (2)

  x0 = _x0(12)
  np.testing.assert_allclose(  # (3)
      dif.ddim_sample(_perfect(x0), s, rng, shape=(B, D), num_steps=num_train),
      dif.ddpm_sample(_perfect(x0), s, rng, shape=(B, D), deterministic=True), atol=1e-6)


def test_reverse_start_from_guess_statistics():
  s = dif.make_schedule("linear", 100)
  n, t_start = 20000, 40
  guess = jnp.broadcast_to(jnp.array([2.0, -1.0]), (n, 2))
  x = np.asarray(dif.reverse_start(s, jax.random.PRNGKey(0), x_start=guess, start_step=t_start))
  ab = _abar64(s)[t_start - 1]  # The chain starts at step T'-1.
  np.testing.assert_allclose(x.mean(0), np.sqrt(ab) * np.array([2.0, -1.0]), atol=0.04)
  np.testing.assert_allclose(x.var(0), np.full(2, 1 - ab), rtol=0.05)
  # Full start from pure noise.
  z = np.asarray(dif.reverse_start(s, jax.random.PRNGKey(1), shape=(n, 2)))
  assert abs(z.mean()) < 0.03 and abs(z.var() - 1) < 0.05


def test_start_from_guess_with_perfect_denoiser():
  s = dif.make_schedule("cosine", 40)
  x0 = _x0(13)
  wrong_guess = -x0 + 3.0  # Even a bad guess is pulled to x0 by a perfect denoiser.
  rng = jax.random.PRNGKey(7)
  for guess in (x0, wrong_guess):
    out = dif.ddpm_sample(_perfect(x0), s, rng, x_start=guess, start_step=10)
    np.testing.assert_allclose(out, x0, rtol=1e-6, atol=1e-6)
    out = dif.ddim_sample(_perfect(x0), s, rng, x_start=guess, start_step=10, num_steps=4)
    np.testing.assert_allclose(out, x0, rtol=1e-6, atol=1e-6)


def test_start_from_guess_runs_only_the_last_steps():
  # The denoiser sees exactly steps T'-1..0 (DDPM) or the S DDIM steps, largest first.
  s = dif.make_schedule("linear", 40)
  seen = []

  def recording(x_t, t):
    jax.debug.callback(lambda tt: seen.append(int(tt[0])), t, ordered=True)
    return jnp.zeros_like(x_t)

  guess = _x0(14)
  dif.ddpm_sample(recording, s, jax.random.PRNGKey(0), x_start=guess, start_step=6).block_until_ready()
  jax.effects_barrier()
  assert seen == [5, 4, 3, 2, 1, 0]
  seen.clear()
  dif.ddim_sample(recording, s, jax.random.PRNGKey(0), x_start=guess, start_step=10,
                  num_steps=4).block_until_ready()
  jax.effects_barrier()
  assert seen == [9, 6, 3, 0]


def test_sampler_argument_errors():
  s = dif.make_schedule("linear", 10)
  fn = _perfect(jnp.zeros((B, D)))
  rng = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="needs x_start"):
    dif.ddpm_sample(fn, s, rng, shape=(B, D), start_step=5)
  with pytest.raises(ValueError, match="start_step"):
    dif.ddpm_sample(fn, s, rng, x_start=jnp.zeros((B, D)), start_step=11)
  with pytest.raises(ValueError, match="start_step"):
    dif.ddim_sample(fn, s, rng, x_start=jnp.zeros((B, D)), start_step=0, num_steps=1)
  with pytest.raises(ValueError, match="num_steps"):
    dif.ddim_sample(fn, s, rng, x_start=jnp.zeros((B, D)), start_step=5, num_steps=6)
  with pytest.raises(ValueError, match="shape or x_start"):
    dif.ddpm_sample(fn, s, rng)
  with pytest.raises(ValueError, match="disagrees"):
    dif.ddim_sample(fn, s, rng, shape=(B, D + 1), x_start=jnp.zeros((B, D)), num_steps=2)


# ------------------------------------------------------------------------------ jit and compiled loop

def _mlp_denoiser(params):
  """A denoiser closing over parameters, as a Flax model's apply would."""
  def fn(x_t, t):
    h = jnp.tanh(x_t @ params["w1"] + params["emb"][t])
    return h @ params["w2"]
  return fn


def _params(num_train: int):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(42), 3)
  return {"w1": jax.random.normal(k1, (D, 8)) * 0.5, "w2": jax.random.normal(k2, (8, D)) * 0.5,
          "emb": jax.random.normal(k3, (num_train, 8)) * 0.1}


def test_samplers_jit_equals_eager():
  num_train = 16
  s = dif.make_schedule("cosine", num_train)
  params = _params(num_train)
  guess = _x0(15)
  rng = jax.random.PRNGKey(9)

  def run_ddpm(params, schedule, rng, guess, start_step):
    return dif.ddpm_sample(_mlp_denoiser(params), schedule, rng, x_start=guess, start_step=start_step)

  def run_ddim(params, schedule, rng, guess, eta, num_steps):
    return dif.ddim_sample(_mlp_denoiser(params), schedule, rng, x_start=guess, num_steps=num_steps,
                           eta=eta)

  jit_ddpm = jax.jit(run_ddpm, static_argnames="start_step")
  jit_ddim = jax.jit(run_ddim, static_argnames="num_steps")
  np.testing.assert_allclose(jit_ddpm(params, s, rng, guess, start_step=9),
                             run_ddpm(params, s, rng, guess, 9), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jit_ddim(params, s, rng, guess, 0.5, num_steps=5),
                             run_ddim(params, s, rng, guess, 0.5, 5), rtol=1e-5, atol=1e-5)
  # Pure-noise start, with the sampler itself jitted and its static arguments marked.
  jit_sample = jax.jit(dif.ddim_sample, static_argnames=("denoise_fn", "num_steps", "shape"))
  fn = _mlp_denoiser(params)
  np.testing.assert_allclose(jit_sample(fn, s, rng, num_steps=4, shape=(B, D)),
                             dif.ddim_sample(fn, s, rng, num_steps=4, shape=(B, D)),
                             rtol=1e-5, atol=1e-5)


def _count_eqns(jaxpr) -> int:
  return sum(1 for _ in _eqns(jaxpr))


def _scan_lengths(jaxpr) -> list[int]:
  return [eqn.params["length"] for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_reverse_loop_is_one_compiled_loop(sampler):
  sizes = {}
  for num_train in (8, 64):
    s = dif.make_schedule("linear", num_train)
    params = _params(num_train)
    if sampler == "ddpm":
      f = lambda p, sch, r: dif.ddpm_sample(_mlp_denoiser(p), sch, r, shape=(B, D))
      expected_len = num_train
    else:
      f = lambda p, sch, r: dif.ddim_sample(_mlp_denoiser(p), sch, r, shape=(B, D),
                                            num_steps=num_train // 2, eta=0.3)
      expected_len = num_train // 2
    jaxpr = jax.make_jaxpr(f)(params, s, jax.random.PRNGKey(0)).jaxpr
    assert _scan_lengths(jaxpr) == [expected_len]  # Exactly one loop, over every reverse step.
    sizes[num_train] = _count_eqns(jaxpr)
  assert sizes[8] == sizes[64]  # The program does not grow with T.


def test_sampler_dtype_follows_the_guess():
  s = dif.make_schedule("linear", 10)
  guess = _x0(16).astype(jnp.float16)
  fn = lambda x_t, t: x_t.astype(jnp.float32) * 0.5  # The denoiser's own dtype is cast back.
  assert dif.ddpm_sample(fn, s, jax.random.PRNGKey(0), x_start=guess, start_step=5).dtype == jnp.float16
  assert dif.ddim_sample(fn, s, jax.random.PRNGKey(0), x_start=guess, num_steps=3).dtype == jnp.float16
