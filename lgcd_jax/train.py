"""Training LGCD (and its DMCDR / EMCDR variants): encoders, then the conditional diffusion model.

One global step counter runs over two stages:
  steps [0, encoder_steps)                  next-item pre-training of both sequence encoders;
  steps [encoder_steps, encoder_steps+steps) the diffusion model on real and pseudo pairs, drawn by the
                                            cyclic batch sampler, with validation every `eval_every`.
Every step is a pure jitted function of (state, batch, rng) with the state donated; the rng of step i is
fold_in(seed key, i) and the batch of step i is a pure function of i, so a resumed run repeats exactly
what an uninterrupted one would have done. Test is evaluated once, at the end, with the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from lgcd_jax import checkpoint as ckpt_lib
from lgcd_jax import results as results_lib
from lgcd_jax import sharding
from lgcd_jax import user_keys
from lgcd_jax.clues import source as clue_source
from lgcd_jax.data import pipeline
from lgcd_jax.data.prepared import PreparedDataset, direction_domains
from lgcd_jax.evaluation import evaluator
from lgcd_jax.model.lgcd import LGCD, uses_clues
from lgcd_jax.text import encoders as text_encoders


SAMPLE_SEED_OFFSET = 7919  # evaluation and serving draw their sampling noise from seed + this


class NonFiniteLossError(FloatingPointError):
  pass


def method_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The LGCD switches each trained method implies (the ablation switches stay the user's for lgcd)."""
  c = ml_collections.ConfigDict(config.to_dict())
  if config.method == "dmcdr":  # diffusion with linear / CFG conditioning, no pseudo data, no clues
    c.model.use_pseudo = False
    c.model.use_clues = False  # guided by the source behaviour only (DESIGN.md §2)
    if c.model.conditioning == "cross_attention":
      c.model.conditioning = "cfg"
  elif config.method == "emcdr":  # a one-shot mapping source user -> target user, overlap users only
    c.model.use_diffusion = False
    c.model.use_pseudo = False
    c.model.use_alignment = False
    c.model.conditioning = "collab_only"
  return c


@dataclasses.dataclass
class Setup:
  """Everything a run builds before its first step; `recommend` and `bench` reuse it."""
  config: ml_collections.ConfigDict
  ds: PreparedDataset
  clues: object
  graphdef: nnx.GraphDef
  state: nnx.State
  mesh: jax.sharding.Mesh


def _is_target_encoder(path) -> bool:
  return any(getattr(k, "key", getattr(k, "name", None)) == "tgt_encoder" for k in path)


ANCHOR_PARAMS = ("anchor_position", "anchor_scale")


def _is_anchor_param(path) -> bool:
  return any(getattr(k, "key", getattr(k, "name", None)) in ANCHOR_PARAMS for k in path)


def learning_rate(config, schedule_steps: int | None = None) -> optax.Schedule:
  """step -> learning rate: warm-up, cosine decay to lr/10 over `schedule_steps` (default: the run's
  encoder_steps + steps), then constant at lr/10."""
  t = config.train
  total = int(schedule_steps or (t.encoder_steps + t.steps))
  warmup = max(1, min(t.warmup_steps, total // 2))
  return optax.warmup_cosine_decay_schedule(0.0, t.lr, warmup, max(total, warmup + 1),
                                            end_value=t.lr * 0.1)


def make_optimizer(config, schedule_steps: int | None = None) -> optax.GradientTransformation:
  """Clipped AdamW, warm-up then cosine decay to lr/10 over `schedule_steps` steps (default: the
  run's encoder_steps + steps; a resumed run passes the schedule length of the run it continues),
  constant at lr/10 after it.

  Stage 2 must not move the target encoder (its x0 is under stop_gradient, lgcd.py): AdamW's
  momentum from stage 1 would keep moving it with a zero gradient. So its updates are masked to
  zero (`optax.masked` over the optimizer's step count) from step encoder_steps on, unless
  train.joint_encoder_weight > 0 trains it in stage 2 too.
  """
  t = config.train
  schedule = learning_rate(config, schedule_steps)
  parts = [optax.clip_by_global_norm(t.grad_clip),
           optax.adamw(schedule, weight_decay=t.weight_decay)]
  anchor_scale = float(t.get("anchor_lr_scale", 1.0))
  if anchor_scale != 1.0:
    # The anchor has a few dozen parameters (a weight per source position, a logit scale) that must
    # travel far in few steps; at the networks' rate they barely move (BUILD_NOTES, issue 12).
    parts.append(optax.masked(optax.scale(anchor_scale), lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: _is_anchor_param(path), params)))
  if float(t.get("joint_encoder_weight", 0.0)) <= 0:
    encoder_steps = int(t.encoder_steps)
    stage1_only = optax.scale_by_schedule(
        lambda count: jnp.where(count < encoder_steps, 1.0, 0.0))
    parts.append(optax.masked(stage1_only, lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: _is_target_encoder(path), params)))
  return optax.chain(*parts)


def id_init(config, ds: PreparedDataset) -> tuple[np.ndarray | None, np.ndarray | None]:
  """Initial (source, target) ID embeddings: None (random) or the joint MF's item factors.

  model.id_init = "mf" starts both tables from the rank-d item factors of the joint factorisation
  over all training users (DESIGN.md §2: the strongest simple baseline's structure), each table
  rescaled to unit mean row norm, the scale of the random initialisation. "mf_scores" does the
  same with the MF baseline's target rescaling ((deg + 1)^baselines.mf_item_power) folded into the
  target table, so that <sum of a user's source rows, e_i> ranks exactly as the MF baseline does
  (what model.anchor = "mf" builds on).
  """
  how = config.model.get("id_init", "random")
  if how == "random":
    return None, None
  if how not in ("mf", "mf_scores"):
    raise ValueError(f"model.id_init must be 'random', 'mf' or 'mf_scores', got {how!r}")
  from lgcd_jax.baselines import mf
  power = float(config.baselines.mf_item_power) if how == "mf_scores" else 0.0
  joint = mf.JointMF(ds, config.direction, config, rank=int(config.model.d), item_power=power,
                     seed=config.seed)

  def unit_scale(v):
    v = np.asarray(v, np.float32)
    return v / max(float(np.mean(np.linalg.norm(v, axis=1))), 1e-8)

  tgt = np.asarray(joint.v_tgt) * np.asarray(joint.tgt_scale)[:, None]
  return unit_scale(joint.v_src), unit_scale(tgt)


def bias_init(config, ds: PreparedDataset) -> np.ndarray | None:
  """Initial target item score offsets: None (zeros) or centred log(1 + count) over all target-domain
  training sequences (target-only and overlap users), per model.item_bias_init."""
  how = config.model.get("item_bias_init", "zero")
  if how not in ("zero", "log_popularity"):
    raise ValueError(f"model.item_bias_init must be 'zero' or 'log_popularity', got {how!r}")
  if how == "zero" or not config.model.get("item_bias", False):
    return None
  from lgcd_jax.baselines import common
  _, tgt = direction_domains(config.direction)
  # The popularity baseline's counts: every target-domain training sequence.
  log_pop = np.log1p(common.item_counts(ds.domain_sequences(tgt), ds.num_items(tgt)))
  return (log_pop - log_pop.mean()).astype(np.float32)


def build(config, ds: PreparedDataset, workdir: Path | None = None, clues=None) -> Setup:
  """Title embeddings, clues, the model and its optimizer, split into (graphdef, state)."""
  config = method_config(config)
  src, tgt = direction_domains(config.direction)
  titles = text_encoders.title_embeddings(config, ds, (src, tgt))
  if not uses_clues(config):
    clues = None  # a model without clue input (DMCDR, EMCDR) is fed none, and its results say so
  elif clues is None:
    clues = clue_source.load_or_make(config, ds, titles)
  src_init, tgt_init = id_init(config, ds)
  model = LGCD(config, ds.num_items(src), ds.num_items(tgt), titles[src], titles[tgt],
               rngs=nnx.Rngs(config.seed), src_id_init=src_init, tgt_id_init=tgt_init,
               tgt_bias_init=bias_init(config, ds))
  optimizer = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  mesh = sharding.make_mesh()
  return Setup(config, ds, clues, graphdef, sharding.put_replicated(mesh, state), mesh)


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


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def score_step(graphdef, state, batch, sampler, steps, rng):
  """Conditions -> guess -> reverse chain -> scores over every target item: one compiled function."""
  model, _ = nnx.merge(graphdef, state)
  # One key per user (the batch's noise_id column): a user's scores do not depend on its row.
  return model.score(model.sample(batch, user_keys.batch_keys(rng, batch), sampler, steps))


# --- evaluation -------------------------------------------------------------------------------------


def evaluate_split(setup: Setup, state, split: str, sampler=None, steps=None) -> dict:
  c = setup.config
  batches = pipeline.eval_batches_for(c, setup.ds, split, setup.clues)
  rng = jax.random.key(c.seed + SAMPLE_SEED_OFFSET)  # the same sampling noise at every evaluation
  score = lambda b: score_step(setup.graphdef, state, b, sampler or c.model.sampler,
                               steps or c.model.sample_steps, rng)
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


def _meta(static: dict, step: int, best: dict, early_stopped: bool, iterator_state=None) -> dict:
  return {"step": int(step), "best": best, "early_stopped": bool(early_stopped),
          "iterator": iterator_state, **static}


def _resume_check(config, workdir: Path):
  """check_meta for Checkpointer.restore_newest_intact: the checkpoint must be of this run."""
  from lgcd_jax import config_check
  from lgcd_jax.cli import UserError

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

  src_dom, tgt_dom = direction_domains(c.direction)
  seq_data = {d: pipeline.sequence_dataset(ds, d, c.data.maxlen, c.data.batch_size, c.seed + i)
              for i, d in enumerate((src_dom, tgt_dom))}
  pools = pipeline.PairPools.build(ds, c.direction, setup.clues, maxlen=c.data.maxlen,
                                   clue_len=c.data.clue_len, text_dim=c.clues.text_dim)
  use_pseudo = bool(c.model.use_pseudo) and len(pools.pseudo) > 0
  pair_data = pipeline.train_dataset(pools, c.data.batch_size, c.seed,
                                     cycle=tuple(c.model.cycle.split(",")),
                                     cyclic=c.model.cyclic_batch, use_pseudo=use_pseudo)
  pair_iter = pipeline.make_train_iterator(pair_data, start_step=max(0, step - t.encoder_steps))
  joint = float(t.get("joint_encoder_weight", 0.0)) > 0
  base_key = jax.random.key(c.seed)
  put = lambda b: sharding.put_batch(setup.mesh, b)
  static_meta = _static_meta(setup, schedule_steps)
  lr_at = learning_rate(c, schedule_steps)  # the rate of step i (for the log)
  clue_coverage = clue_source.coverage(setup.clues, ds, c.direction)  # users with a clue, per pool
  log.write("start", step=step, total_steps=total, devices=jax.device_count(),
            processes=jax.process_count(), clue_source=getattr(setup.clues, "source", None),
            clue_coverage=clue_coverage,
            pools={"real": len(pools.real), "pseudo": len(pools.pseudo) if use_pseudo else 0})

  bar = tqdm(total=total, initial=step, desc=f"{c.method} {c.direction}", unit="step",
             disable=jax.process_index() != 0 or finished, dynamic_ncols=True,
             mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
  window_start, window_steps = time.perf_counter(), 0
  while step < total and not finished:
    rng = jax.random.fold_in(base_key, step)
    if step < t.encoder_steps:
      state, metrics = encoder_step(setup.graphdef, state, put(seq_data[src_dom][step]),
                                    put(seq_data[tgt_dom][step]), rng)
      stage = "encoder"
    elif joint:
      state, metrics = joint_step(setup.graphdef, state, put(next(pair_iter)),
                                  put(seq_data[src_dom][step]), put(seq_data[tgt_dom][step]), rng)
      stage = "diffusion"
    else:
      state, metrics = train_step(setup.graphdef, state, put(next(pair_iter)), rng)
      stage = "diffusion"
    step += 1
    window_steps += 1
    loss = float(metrics["loss"] if stage == "diffusion"
                 else metrics["encoder_loss/src"] + metrics["encoder_loss/tgt"])
    if not math.isfinite(loss):
      ckpt.wait()
      raise NonFiniteLossError(
          f"loss is {loss} at step {step} ({stage} stage); stopping. The last good checkpoint "
          f"(step {ckpt.latest_step()}) in {workdir / 'checkpoints' / 'latest'} is intact; lower "
          f"train.lr or check the data.")
    bar.update(1)
    if step % t.log_every == 0 or step == total:
      elapsed = time.perf_counter() - window_start
      users_per_s = window_steps * c.data.batch_size / max(elapsed, 1e-9)
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      bar.set_postfix(loss=f"{loss:.4f}", users_s=f"{users_per_s:.0f}")
      log.write("train", step=step, stage=stage, users_per_s=users_per_s,
                lr=float(lr_at(step - 1)), **host)
      window_start, window_steps = time.perf_counter(), 0

    at_eval = step > t.encoder_steps and ((step - t.encoder_steps) % t.eval_every == 0
                                          or step == total)
    if at_eval:
      result = evaluate_split(setup, state, "valid")
      value = _metric(result, t.select_metric)
      improved = value > best["metric"]
      if improved:
        best = {"metric": value, "step": step, "evals_since": 0}
        ckpt.save("best", step, state, _meta(static_meta, step, best, False))
      else:
        best["evals_since"] += 1
      log.write("eval", step=step, split="valid", improved=improved,
                **{k: result[k] for k in ("sampled", "full", "users_per_s")})
      if jax.process_index() == 0:
        bar.write(f"step {step}: valid {t.select_metric} {value:.4f}"
                  f"{' (best)' if improved else ''}")
      if best["evals_since"] >= t.patience:
        logging.info("early stop at step %d: no validation gain in %d evals", step, t.patience)
        finished = early_stopped = True
    if at_eval or step % t.checkpoint_every == 0 or step == total:
      ckpt.save("latest", step, state, _meta(static_meta, step, best, early_stopped,
                                             pair_iter.get_state() if step > t.encoder_steps
                                             else None))
  bar.close()
  ckpt.wait()

  # Test is read once, with the best validation checkpoint.
  try:
    best_state = ckpt.restore("best", state)
  except ckpt_lib.CheckpointReadError as e:
    from lgcd_jax.cli import UserError
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
