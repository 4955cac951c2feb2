"""Diffusion math for generating target-domain user representations, independent of any network.

The model generates a user's target-domain representation x0 DDPM-style with the denoiser predicting
x0 directly (x0-parameterisation, DreamRec lineage). This module holds only the math: noise schedules,
forward noising, the true posterior q(x_{t-1} | x_t, x0), training targets, and two reverse samplers
(ancestral DDPM and DDIM). The denoiser is passed in as a function `denoise_fn(x_t, t) -> x0_hat`
with `t` an int32 [B] array, so it can close over model parameters inside `jax.jit`.

Step convention: steps are 0..T-1 and step t=0 is the first noising step, so
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with abar_t = prod_{s<=t} (1 - beta_s).

Static arguments: `shape`, `start_step`, `num_steps` and `deterministic` fix loop lengths and array
shapes, so they must be Python values. Under `jax.jit` mark them static (`static_argnames`) or close
over them. The schedule itself is a pytree of arrays and may be a traced argument; its length T is read
from the array shape, which is static.

Randomness: both samplers split `rng` as `start_rng, loop_rng = jax.random.split(rng)`, start the chain
at `reverse_start(schedule, start_rng, ...)` and draw the noise of the i-th reverse step from the i-th
key of `jax.random.split(loop_rng, n)`. Because they draw noise the same way,
`ddim_sample(eta=1, num_steps=T)` reproduces `ddpm_sample` draw for draw (see `ddim_sample`).
The samplers also take a [B] array of keys, one per row (e.g. one per user, `lgcd_jax.user_keys`):
then row b's noise is drawn from its own key only, so a row's sample does not depend on its position
in the batch, on the batch size or on the other rows.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]

SCHEDULE_KINDS = ("linear", "cosine", "exp")


@flax.struct.dataclass
class Schedule:
  """Precomputed per-step quantities of a beta schedule; every field is a [T] array.

  A pytree, so it can be passed to or closed over by jitted functions.
  """
  betas: jnp.ndarray
  alphas: jnp.ndarray
  alphas_cumprod: jnp.ndarray
  alphas_cumprod_prev: jnp.ndarray  # abar_{t-1}, with abar_{-1} = 1.
  sqrt_alphas_cumprod: jnp.ndarray
  sqrt_one_minus_alphas_cumprod: jnp.ndarray
  posterior_variance: jnp.ndarray  # Exactly 0 at t=0: the last reverse step adds no noise.
  posterior_log_variance_clipped: jnp.ndarray  # log variance with the t=0 zero replaced by t=1's.
  posterior_mean_coef1: jnp.ndarray  # Coefficient of x0 in the posterior mean.
  posterior_mean_coef2: jnp.ndarray  # Coefficient of x_t in the posterior mean.

  @property
  def num_steps(self) -> int:
    """T, the number of diffusion steps (static: read from the array shape)."""
    return self.betas.shape[0]


def _row_keys(rng: jax.Array) -> bool:
  """Whether `rng` is a batch of keys, one per row (typed [B] keys, or legacy uint32 [B, 2])."""
  typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
  return rng.ndim > (0 if typed else 1)


def _split(rng: jax.Array, n: int) -> jax.Array:
  """n keys from one key ([n]), or n keys per row from [B] row keys ([n, B]: index i is step i's)."""
  if not _row_keys(rng):
    return jax.random.split(rng, n)
  return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, n))(rng), 0, 1)


def _normal(rng: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """N(0, I) of `shape`; with [B] row keys, row b is drawn from key b alone."""
  if not _row_keys(rng):
    return jax.random.normal(rng, shape, dtype=dtype)
  if rng.shape[0] != shape[0]:
    raise ValueError(f"{rng.shape[0]} row keys for a batch of shape {tuple(shape)}")
  return jax.vmap(lambda k: jax.random.normal(k, tuple(shape[1:]), dtype=dtype))(rng)


def _betas(kind: str, num_steps: int, beta_start: float, beta_end: float) -> np.ndarray:
  """The beta sequence in float64, so that derived quantities are computed precisely."""
  if kind == "linear":
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
  if kind == "exp":
    # Geometric interpolation: constant ratio between consecutive betas.
    return np.exp(np.linspace(np.log(beta_start), np.log(beta_end), num_steps, dtype=np.float64))
  if kind == "cosine":
    # Nichol & Dhariwal (2021): abar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), s = 0.008.
    s = 0.008
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    abar = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    # The clip keeps the last beta below 1, where abar(1) ~ 0 would make it exactly 1.
    return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)
  raise ValueError(f"unknown beta schedule {kind!r}; expected one of {SCHEDULE_KINDS}")


def make_schedule(kind: str, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                  dtype: jnp.dtype = jnp.float32) -> Schedule:
  """Builds a beta schedule and everything derived from it.

  Args:
    kind: "linear" (betas evenly spaced from beta_start to beta_end), "cosine" (Nichol & Dhariwal,
      s=0.008, betas clipped to 0.999; beta_start/beta_end are ignored) or "exp" (geometric
      interpolation from beta_start to beta_end).
    num_steps: T >= 1.
    beta_start: first beta of "linear" and "exp".
    beta_end: last beta of "linear" and "exp".
    dtype: dtype of the stored arrays (computed in float64 first).

  Raises:
    ValueError: unknown kind, T < 1, or betas outside 0 < beta_start <= beta_end < 1.
  """
  if kind not in SCHEDULE_KINDS:
    raise ValueError(f"unknown beta schedule {kind!r}; expected one of {SCHEDULE_KINDS}")
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
  if not 0.0 < beta_start <= beta_end < 1.0:
    raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
  num_steps = int(num_steps)
  betas = _betas(kind, num_steps, beta_start, beta_end)
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.concatenate([[1.0], abar[:-1]])
  post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
  # log(0) at t=0 is replaced by the t=1 value (as in Ho et al.); with T=1 there is no t=1, and beta
  # (the "large" variance choice) stands in.
  post_var_for_log = np.concatenate([post_var[1:2], post_var[1:]]) if num_steps > 1 else betas
  fields = dict(
      betas=betas,
      alphas=alphas,
      alphas_cumprod=abar,
      alphas_cumprod_prev=abar_prev,
      sqrt_alphas_cumprod=np.sqrt(abar),
      sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
      posterior_variance=post_var,
      posterior_log_variance_clipped=np.log(post_var_for_log),
      posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
      posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
  )
  return Schedule(**{k: jnp.asarray(v, dtype=dtype) for k, v in fields.items()})


def _coef(values: jnp.ndarray, t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """values[t] reshaped to broadcast against x (t scalar or [B]) and cast to x's dtype."""
  c = jnp.asarray(values)[t]
  return c.reshape(c.shape + (1,) * (x.ndim - c.ndim)).astype(x.dtype)


def q_sample(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """Forward noising: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t is a scalar or [B] int array."""
  return (_coef(schedule.sqrt_alphas_cumprod, t, x0) * x0
          + _coef(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise.astype(x0.dtype))


def q_posterior_mean_variance(schedule: Schedule, x0: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray
                              ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0), each shaped like x_t.

  At t=0 the "previous" state is the clean sample itself: the mean is x0 and the variance is 0.
  """
  mean = (_coef(schedule.posterior_mean_coef1, t, x_t) * x0.astype(x_t.dtype)
          + _coef(schedule.posterior_mean_coef2, t, x_t) * x_t)
  variance = jnp.broadcast_to(_coef(schedule.posterior_variance, t, x_t), x_t.shape)
  log_variance = jnp.broadcast_to(_coef(schedule.posterior_log_variance_clipped, t, x_t), x_t.shape)
  return mean, variance, log_variance


def training_targets(schedule: Schedule, x0: jnp.ndarray, rng: jax.Array
                     ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Draws t ~ U{0..T-1} per row and noise ~ N(0, I); returns (x_t, t, noise) with t int32 [B]."""
  t_rng, noise_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_steps, dtype=jnp.int32)
  noise = jax.random.normal(noise_rng, x0.shape, dtype=x0.dtype)
  return q_sample(schedule, x0, t, noise), t, noise


def cfg_combine(x0_cond: jnp.ndarray, x0_uncond: jnp.ndarray, weight: float | jnp.ndarray
                ) -> jnp.ndarray:
  """Classifier-free guidance on x0 predictions: x0_uncond + weight * (x0_cond - x0_uncond).

  weight=1 gives the conditional prediction, weight=0 the unconditional one, weight>1 extrapolates
  away from the unconditional prediction.
  """
  return x0_uncond + weight * (x0_cond - x0_uncond)


def _resolve_start_step(schedule: Schedule, start_step: int | None, x_start: jnp.ndarray | None) -> int:
  """Validates the static start step T' (1 <= T' <= T); None means T."""
  num_train = schedule.num_steps
  if start_step is None:
    return num_train
  if not isinstance(start_step, (int, np.integer)):
    raise TypeError(f"start_step must be a static Python int, got {type(start_step).__name__}; "
                    "mark it static under jax.jit")
  if not 1 <= start_step <= num_train:
    raise ValueError(f"start_step must be in [1, {num_train}], got {start_step}")
  if start_step < num_train and x_start is None:
    # Pure noise is only the right marginal at the last step; an intermediate start needs a guess.
    raise ValueError(f"start_step={start_step} < T={num_train} needs x_start (the guess to noise)")
  return int(start_step)


def reverse_start(schedule: Schedule, rng: jax.Array, *, shape: tuple[int, ...] | None = None,
                  x_start: jnp.ndarray | None = None, start_step: int | None = None,
                  dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
  """The state the reverse chain starts from, at step T'-1 (T' = start_step, default T).

  Without x_start: pure noise N(0, I) of `shape` and `dtype`. With x_start (the guesser's guess):
  the partly noised guess q_sample(x_start, T'-1, noise), in x_start's dtype.
  """
  start_step = _resolve_start_step(schedule, start_step, x_start)
  if x_start is None:
    if shape is None:
      raise ValueError("give shape or x_start")
    return _normal(rng, tuple(shape), dtype)
  if shape is not None and tuple(shape) != tuple(x_start.shape):
    raise ValueError(f"shape {tuple(shape)} disagrees with x_start.shape {tuple(x_start.shape)}")
  noise = _normal(rng, x_start.shape, x_start.dtype)
  return q_sample(schedule, x_start, jnp.asarray(start_step - 1, jnp.int32), noise)


def _predict(denoise_fn: DenoiseFn, x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Calls the denoiser with a batch of step indices; keeps x's dtype so the scan carry is stable."""
  t_batch = jnp.full((x.shape[0],), t, dtype=jnp.int32)
  return denoise_fn(x, t_batch).astype(x.dtype)


# DDPM draws its per-step noise before the reverse loop when all of it fits in this many bytes.
PREDRAW_NOISE_BYTES = 64 << 20


def ddpm_sample(denoise_fn: DenoiseFn, schedule: Schedule, rng: jax.Array, *,
                shape: tuple[int, ...] | None = None, x_start: jnp.ndarray | None = None,
                start_step: int | None = None, deterministic: bool = False,
                dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
  """Ancestral DDPM sampling with an x0-predicting denoiser; returns x0_hat shaped like the start.

  Runs steps T'-1, ..., 0 (T' = start_step, default T) in one `lax.scan`. Each step predicts
  x0_hat = denoise_fn(x_t, t) and draws x_{t-1} ~ N(posterior mean(x0_hat, x_t), posterior variance).
  The step at t=0 has coefficient 1 on x0_hat, 0 on x_t and variance 0, so the result is the
  denoiser's last prediction.

  Args:
    denoise_fn: (x_t [B, ...], t int32 [B]) -> predicted x0, same shape as x_t.
    schedule: from `make_schedule`.
    rng: PRNG key for the start and the per-step noise, or [B] keys, one per row.
    shape: shape of the sample when starting from pure noise (static).
    x_start: the guess to start from (with start_step); fixes shape and dtype.
    start_step: T' (static Python int, 1 <= T' <= T); T' < T requires x_start.
    deterministic: follow the posterior mean without per-step noise (the start is still random).
    dtype: dtype of a pure-noise start.
  """
  start_step = _resolve_start_step(schedule, start_step, x_start)
  start_rng, loop_rng = _split(rng, 2)
  x = reverse_start(schedule, start_rng, shape=shape, x_start=x_start, start_step=start_step,
                    dtype=dtype)
  steps = jnp.arange(start_step - 1, -1, -1, dtype=jnp.int32)
  keys = _split(loop_rng, start_step)
  # Every step's noise drawn before the loop, from the same keys, when it is small: drawn step by
  # step from per-row keys it took a third of a DDPM-50 chain's op time on the CPU.
  predraw = (not deterministic
             and start_step * x.size * jnp.dtype(x.dtype).itemsize <= PREDRAW_NOISE_BYTES)
  # Per step: its noise (predrawn) or the key to draw it from.
  noise_or_keys = jax.vmap(lambda k: _normal(k, x.shape, x.dtype))(keys) if predraw else keys

  def step(x_t, inputs):
    t, noise_or_key = inputs
    x0_hat = _predict(denoise_fn, x_t, t)
    mean, variance, _ = q_posterior_mean_variance(schedule, x0_hat, x_t, t)
    if deterministic:
      return mean, None
    noise = noise_or_key if predraw else _normal(noise_or_key, x_t.shape, x_t.dtype)
    return mean + jnp.sqrt(variance) * noise, None

  x, _ = jax.lax.scan(step, x, (steps, noise_or_keys))
  return x


def ddim_timesteps(start_step: int, num_steps: int) -> np.ndarray:
  """The S = num_steps steps DDIM visits, ascending, evenly spaced over [0, T'-1] (T' = start_step).

  The last entry is always T'-1 (where the chain starts); for S >= 2 the first is 0; S = T' gives
  every step. Rounding evenly spaced reals keeps the steps distinct because their spacing is >= 1.
  """
  if not 1 <= num_steps <= start_step:
    raise ValueError(f"num_steps must be in [1, {start_step}], got {num_steps}")
  if num_steps == 1:
    return np.array([start_step - 1], dtype=np.int32)
  return np.round(np.linspace(0, start_step - 1, num_steps)).astype(np.int32)


def ddim_sample(denoise_fn: DenoiseFn, schedule: Schedule, rng: jax.Array, *, num_steps: int,
                shape: tuple[int, ...] | None = None, x_start: jnp.ndarray | None = None,
                start_step: int | None = None, eta: float | jnp.ndarray = 0.0,
                dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
  """DDIM sampling over S = num_steps evenly spaced steps (see `ddim_timesteps`) in one `lax.scan`.

  From step tau to the previous visited step tau' (abar' = 1 after the last one):
    eps_hat = (x - sqrt(abar) x0_hat) / sqrt(1 - abar),
    sigma   = eta * sqrt((1 - abar') / (1 - abar)) * sqrt(1 - abar / abar'),
    x'      = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat + sigma z.
  eta=0 is deterministic given the start. With S = T and eta = 1, sigma^2 is the DDPM posterior
  variance and the mean equals the DDPM posterior mean, so with the same rng this reproduces
  `ddpm_sample` (both draw noise the same way). The final step has abar' = 1 and returns x0_hat.

  Args:
    denoise_fn: (x_t [B, ...], t int32 [B]) -> predicted x0.
    schedule: from `make_schedule`.
    rng: PRNG key, or [B] keys, one per row.
    num_steps: S, static Python int, 1 <= S <= T'.
    shape, x_start, start_step, dtype: as in `ddpm_sample`.
    eta: stochasticity; may be traced.
  """
  start_step = _resolve_start_step(schedule, start_step, x_start)
  if not isinstance(num_steps, (int, np.integer)):
    raise TypeError(f"num_steps must be a static Python int, got {type(num_steps).__name__}; "
                    "mark it static under jax.jit")
  taus = ddim_timesteps(start_step, int(num_steps))[::-1].copy()  # Descending: T'-1 first.
  start_rng, loop_rng = _split(rng, 2)
  x = reverse_start(schedule, start_rng, shape=shape, x_start=x_start, start_step=start_step,
                    dtype=dtype)
  abar = schedule.alphas_cumprod[taus]
  abar_prev = jnp.concatenate([abar[1:], jnp.ones((1,), abar.dtype)])
  # eta = 0 given as a number (the default): sigma is 0 at every step, so no step noise is drawn
  # (with per-row keys its hashing cost as much as a small denoiser step); x is the same.
  noiseless = isinstance(eta, (int, float)) and eta == 0
  keys = None if noiseless else _split(loop_rng, len(taus))

  def step(x_t, inputs):
    t, a, a_prev, key = inputs
    a, a_prev = a.astype(x_t.dtype), a_prev.astype(x_t.dtype)
    x0_hat = _predict(denoise_fn, x_t, t)
    eps_hat = (x_t - jnp.sqrt(a) * x0_hat) / jnp.sqrt(1 - a)
    sigma = 0.0 if noiseless else (jnp.asarray(eta, x_t.dtype) * jnp.sqrt((1 - a_prev) / (1 - a))
                                   * jnp.sqrt(jnp.maximum(1 - a / a_prev, 0)))
    direction = jnp.sqrt(jnp.maximum(1 - a_prev - sigma**2, 0)) * eps_hat
    x_prev = jnp.sqrt(a_prev) * x0_hat + direction
    if noiseless:
      return x_prev, None
    return x_prev + sigma * _normal(key, x_t.shape, x_t.dtype), None

  x, _ = jax.lax.scan(step, x, (jnp.asarray(taus), abar, abar_prev, keys))
  return x
