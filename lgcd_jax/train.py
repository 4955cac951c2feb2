"""Training LGCD (and its DMCDR / EMCDR variants): encoders, then the conditional diffusion model.

One global step counter runs over two stages:
  steps [0, encoder_steps)                  next-item pre-training of both sequence encoders;
  steps [encoder_steps, encoder_steps+steps) the diffusion model on real and pseudo pairs, drawn by the
                                            cyclic batch sampler, with validation every `eval_every`.
Every step is a pure jitted function of (state, batch, rng) with the state donated; the rng of step i is
fold_in(seed key, i) and the batch of step i is a pure function of i, so a resumed run repeats exactly
what an uninterrupted one would have done. Test is evaluated once, at the end, with the best checkpoint.
With train.ema_decay > 0, validation, the best checkpoint and test use the weight average
(`lgcd_jax/ema.py`).

The loop never waits on the device between those actions: the batches of the next steps are made
(and transferred) on a background thread (`data.prefetch`), and the losses stay on the device until
a log, evaluation or checkpoint step (`itstime`) reads them, the NaN guard included, so nothing is
logged, evaluated or saved after a non-finite loss. Building the run is `builder.build`; scoring is
`inference`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import sys
import time
from pathlib import Path

import jax
import optax
from flax import nnx
from tqdm import tqdm

from lgcd_jax import checkpoint as ckpt_lib
from lgcd_jax import config_check
from lgcd_jax import ema
from lgcd_jax import inference
from lgcd_jax import results as results_lib
from lgcd_jax import sharding
from lgcd_jax.builder import Setup, build, learning_rate, make_optimizer
from lgcd_jax.cli import UserError
from lgcd_jax.clues import source as clue_source
from lgcd_jax.data import pipeline
from lgcd_jax.data.prefetch import Prefetcher
from lgcd_jax.data.prepared import PreparedDataset, direction_domains
from lgcd_jax.evaluation import evaluator

class NonFiniteLossError(FloatingPointError):
  pass


# --- the pure step functions ------------------------------------------------------------------------


def _apply(graphdef, state, loss_method, *args):
  model, optimizer = nnx.merge(graphdef, state)

  def loss_fn(model):
    return getattr(model, loss_method)(*args)

  (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  metrics["grad_norm"] = optax.tree.norm(grads)
  optimizer.update(model, grads)
  return nnx.state((model, optimizer)), metrics


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def encoder_step(graphdef, state, batch_src, batch_tgt, rng):
  return _apply(graphdef, state, "encoder_loss", batch_src, batch_tgt, rng)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(graphdef, state, batch, rng):
  return _apply(graphdef, state, "loss", batch, rng)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def joint_step(graphdef, state, batch, batch_src, batch_tgt, rng):
  """The diffusion-stage step with the encoders' next-item objective kept (train.joint_encoder_weight)."""
  return _apply(graphdef, state, "joint_loss", batch, batch_src, batch_tgt, rng)


# --- evaluation -------------------------------------------------------------------------------------


def evaluate_split(setup: Setup, state, split: str, sampler=None, steps=None) -> dict:
  """Ranking metrics of `split` ("valid" or "test") for the model in `state` (`evaluator.evaluate`)."""
  c = setup.config
  batches = pipeline.eval_batches_for(c, setup.ds, split, setup.clues)
  key = inference.sampling_key(c.seed)  # the same sampling noise at every evaluation
  score = lambda b: inference.score_step(setup.graphdef, state, b, sampler or c.model.sampler,
                                         steps or c.model.sample_steps, key)
  return evaluator.evaluate(score, batches, put=lambda b: _put_eval(setup.mesh, b))


def _put_eval(mesh, batch):
  local = pipeline.process_slice(batch, jax.process_index(), jax.process_count())
  return sharding.put_batch(mesh, local)


def _metric(result: dict, name: str) -> float:
  proto, key = name.split("/")
  return float(result[proto][key])


# --- the loop ---------------------------------------------------------------------------------------


# The layout of a checkpoint's (model, optimizer) state; 2: the target encoder's stage-2 mask.
STATE_LAYOUT = 2


def _static_meta(setup: Setup, schedule_steps: int) -> dict:
  """What every checkpoint of a run carries besides its step: computed once per run."""
  ds = setup.ds
  src, tgt = direction_domains(setup.config.direction)
  return {
      "config": setup.config.to_json(),
      "state_layout": STATE_LAYOUT,
      # The learning-rate schedule's length: a resumed run with a longer train.steps keeps it.
      "schedule_steps": int(schedule_steps),
      "direction": setup.config.direction,
      "clue_source": getattr(setup.clues, "source", None),
      "vocab": {"source": ds.item_ids[src].tolist(), "target": ds.item_ids[tgt].tolist()},
      # The overlap users the neighbour bridge needs to serve a user without a clue (recommend.py).
      "bridge": {"source": ds.pools["overlap"][src].to_lists(),
                 "target": ds.pools["overlap"][tgt].to_lists()},
  }


def _meta(static: dict, step: int, best: dict, early_stopped: bool,
          ema_in_model: bool = False) -> dict:
  # ema_in_model: the state's model part holds the weight average, and the average's slot the raw
  # weights (a `best` checkpoint of a train.ema_decay run; lgcd_jax/ema.py).
  return {"step": int(step), "best": best, "early_stopped": bool(early_stopped),
          "ema_in_model": bool(ema_in_model), **static}


def itstime(step: int, every: int, total: int) -> bool:
  """Whether a periodic action (log, evaluate, checkpoint) runs after `step` of `total` (1-based):
  every `every` steps and after the last one (every <= 0: only after the last)."""
  return step == total or (every > 0 and step % every == 0)


class _PendingLosses:
  """The device losses of the steps since the last read; `check` reads them all at once."""

  def __init__(self):
    self._pending: list[tuple[int, str, jax.Array]] = []

  def add(self, step: int, stage: str, loss: jax.Array) -> None:
    self._pending.append((step, stage, loss))

  def check(self, workdir: Path, ckpt: ckpt_lib.Checkpointer) -> float:
    """The last loss; NonFiniteLossError naming the first non-finite step, if any."""
    values = jax.device_get([loss for _, _, loss in self._pending])
    pending, self._pending = self._pending, []
    for (step, stage, _), value in zip(pending, values):
      if not math.isfinite(float(value)):
        ckpt.wait()
        raise NonFiniteLossError(
            f"loss is {float(value)} at step {step} ({stage} stage); stopping. The last good "
            f"checkpoint (step {ckpt.latest_step()}) in {workdir / 'checkpoints' / 'latest'} is "
            f"intact; lower train.lr or check the data.")
    return float(values[-1]) if values else math.nan


def _resume_check(config, workdir: Path):
  """check_meta for Checkpointer.restore_newest_intact: the checkpoint must be of this run."""

  def check(meta: dict, directory: Path) -> None:
    if not isinstance(meta.get("config"), str) or not isinstance(meta.get("step"), int):
      raise ckpt_lib.CheckpointReadError(directory, ValueError("its meta has no config or step"))
    if meta.get("state_layout", 1) != STATE_LAYOUT:
      raise UserError(f"{workdir} holds a checkpoint of an older lgcd_jax whose optimizer state "
                      f"has another layout; it cannot be resumed: use another --workdir "
                      f"(python -m lgcd_jax.recommend can still serve it)")
    diffs = config_check.resume_differences(meta["config"], config)
    if diffs:
      raise UserError(f"{workdir} holds a run with other settings ({config_check.describe(diffs)})"
                      f"; resuming it would report that run. Use another --workdir (without "
                      f"--workdir, main.py names one after your overrides)")
  return check


def _with_schedule(setup: Setup, state, schedule_steps: int):
  """(graphdef, state) whose optimizer runs the learning-rate schedule over `schedule_steps`."""
  model, optimizer = nnx.merge(setup.graphdef, state)
  optimizer.tx = make_optimizer(setup.config, schedule_steps)
  return nnx.split((model, optimizer))


def train_and_evaluate(config, workdir: Path, ds: PreparedDataset, data: str,
                       log: results_lib.MetricsLog) -> dict:
  """Trains (resuming WORKDIR/checkpoints when they hold this run), then evaluates the best step.

  A resume needs the checkpoint's config to equal this one but for config_check.RESUMABLE; a longer
  train.steps continues the run with the learning-rate schedule of the run it continues (warm-up
  and cosine decay over that run's steps, then constant at lr/10), so the steps it shares with the
  first run are the same. An unreadable newest checkpoint is set aside with a warning and the run
  resumes from the newest readable one (or starts fresh).
  """
  setup = build(config, ds, workdir)
  c = setup.config
  t = c.train
  sharding.check_batch_size(c.data.batch_size)
  sharding.check_batch_size(c.data.eval_batch_size, "eval batch size")
  ckpt = ckpt_lib.Checkpointer(workdir)
  total = t.encoder_steps + t.steps
  state = setup.state
  best = {"metric": -math.inf, "step": -1, "evals_since": 0}
  step, finished, early_stopped = 0, False, False
  schedule_steps = total
  restored = ckpt.restore_newest_intact(state, _resume_check(c, workdir))
  if restored is not None:
    state, meta, kind, at = restored
    if meta.get("ema_in_model"):
      state = ema.swap(state)  # back to the raw weights the next step trains
    step, best = meta["step"], meta["best"]
    # A longer train.steps than the checkpoint's run continues it; an early stop stays stopped.
    finished = meta["early_stopped"] or step >= total
    old = json.loads(meta["config"])["train"]
    schedule_steps = int(meta.get("schedule_steps") or old["encoder_steps"] + old["steps"])
    if schedule_steps != total:
      graphdef, state = _with_schedule(setup, state, schedule_steps)
      setup = dataclasses.replace(setup, graphdef=graphdef)
      logging.warning("train.steps is now %d (the run being continued had %d): its "
                      "learning-rate schedule is kept, so the steps after step %d run at its "
                      "final rate, lr/10", t.steps, schedule_steps - t.encoder_steps,
                      schedule_steps)
    state = sharding.put_replicated(setup.mesh, state)
    logging.info("resumed from %s at step %d", ckpt.step_dir(kind, at), step)

  train_data = pipeline.training_data(c, ds, setup.clues)
  joint = float(t.get("joint_encoder_weight", 0.0)) > 0
  base_key = jax.random.key(c.seed)
  put = lambda b: sharding.put_batch(setup.mesh, b)
  static_meta = _static_meta(setup, schedule_steps)
  lr_at = learning_rate(c, schedule_steps)  # the rate of step i (for the log)
  clue_coverage = clue_source.coverage(setup.clues, ds, c.direction)  # users with a clue, per pool
  log.write("start", step=step, total_steps=total, devices=jax.device_count(),
            processes=jax.process_count(), clue_source=getattr(setup.clues, "source", None),
            clue_coverage=clue_coverage,
            pools={"real": len(train_data.pools.real),
                   "pseudo": len(train_data.pools.pseudo) if train_data.use_pseudo else 0})

  averaged = ema.has_average(state)
  pair_iter = pipeline.make_train_iterator(train_data.pairs, start_step=max(0, step - t.encoder_steps))

  def batches_of(i: int) -> tuple:
    """Step i's device batches (made on the prefetch thread: pure functions of i)."""
    if i < t.encoder_steps:
      return tuple(put(b) for b in train_data.encoder_batches(i))
    pair = put(next(pair_iter))  # the iterator walks the steps in order, as the prefetcher does
    return (pair,) + (tuple(put(b) for b in train_data.encoder_batches(i)) if joint else ())

  bar = tqdm(total=total, initial=step, desc=f"{c.method} {c.direction}", unit="step",
             disable=jax.process_index() != 0 or finished, dynamic_ncols=True,
             mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
  losses = _PendingLosses()
  window_start, window_steps = time.perf_counter(), 0
  prefetch = Prefetcher(batches_of, step, total if not finished else step, depth=2)
  # Every save has finished when the loop ends, also when it stops on an error or Ctrl-C.
  with prefetch, contextlib.ExitStack() as finally_:
    finally_.callback(ckpt.wait)
    for at_step, batch in prefetch:
      rng = jax.random.fold_in(base_key, at_step)
      if at_step < t.encoder_steps:
        state, metrics = encoder_step(setup.graphdef, state, *batch, rng)
        stage = "encoder"
        loss = metrics["encoder_loss/src"] + metrics["encoder_loss/tgt"]
      else:
        step_fn = joint_step if joint else train_step
        state, metrics = step_fn(setup.graphdef, state, *batch, rng)
        stage = "diffusion"
        loss = metrics["loss"]
      step = at_step + 1
      window_steps += 1
      bar.update(1)
      # The loss stays on the device until a log, eval or checkpoint step reads it: the loop
      # dispatches the next step without waiting for this one.
      losses.add(step, stage, loss)

      at_log = itstime(step, t.log_every, total)
      at_eval = step > t.encoder_steps and itstime(step - t.encoder_steps, t.eval_every, t.steps)
      at_save = at_eval or itstime(step, t.checkpoint_every, total)
      if not (at_log or at_eval or at_save):
        continue
      # Nothing is logged, evaluated or saved after a non-finite loss.
      last_loss = losses.check(workdir, ckpt)
      if at_log:
        elapsed = time.perf_counter() - window_start
        users_per_s = window_steps * c.data.batch_size / max(elapsed, 1e-9)
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bar.set_postfix(loss=f"{last_loss:.4f}", users_s=f"{users_per_s:.0f}")
        log.write("train", step=step, stage=stage, users_per_s=users_per_s,
                  lr=float(lr_at(step - 1)), **host)
        window_start, window_steps = time.perf_counter(), 0
      if at_eval:
        # With train.ema_decay, what is evaluated, selected and kept as `best` is the average.
        evaluated = ema.swap(state) if averaged else state
        result = evaluate_split(setup, evaluated, "valid")
        value = _metric(result, t.select_metric)
        improved = value > best["metric"]
        if improved:
          best = {"metric": value, "step": step, "evals_since": 0}
          ckpt.save("best", step, evaluated, _meta(static_meta, step, best, False, averaged))
        else:
          best["evals_since"] += 1
        log.write("eval", step=step, split="valid", improved=improved,
                  **{k: result[k] for k in ("sampled", "full", "users_per_s")})
        if jax.process_index() == 0:
          bar.write(f"step {step}: valid {t.select_metric} {value:.4f}"
                    f"{' (best)' if improved else ''}")
        if best["evals_since"] >= t.patience:
          logging.info("early stop at step %d: no validation gain in %d evals", step, t.patience)
          early_stopped = True
      if at_save:
        ckpt.save("latest", step, state, _meta(static_meta, step, best, early_stopped))
      if early_stopped:
        break
  bar.close()

  # Test is read once, with the best validation checkpoint (its model part is what was evaluated).
  try:
    best_state = ckpt.restore("best", state)
  except ckpt_lib.CheckpointReadError as e:
    raise UserError(f"{e}: the run's test evaluation needs its best checkpoint; rerun in a fresh "
                    f"--workdir") from e
  if best_state is None:
    raise RuntimeError("no best checkpoint: training ran no validation (train.steps must be > 0)")
  state = sharding.put_replicated(setup.mesh, best_state[0])
  scores = {split: evaluate_split(setup, state, split) for split in ("valid", "test")}
  log.write("eval", step=best["step"], split="test", **{k: scores["test"][k]
                                                         for k in ("sampled", "full")})
  ckpt.close()
  return results_lib.make_results(
      c.method, c.direction, data, scores["valid"], scores["test"],
      clue_source=getattr(setup.clues, "source", None), clue_coverage=clue_coverage,
      best_step=best["step"], steps_run=step,
      sampling_users_per_s=scores["test"]["users_per_s"], config=c.to_dict())
