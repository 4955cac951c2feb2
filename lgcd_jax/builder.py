"""Building a run: the method's settings, its model and optimizer, before the first step.

`build(config, dataset)` is what training (`train`), serving tests and the benchmark (`bench`) start
from: title embeddings, clues, the LGCD model (item tables from the joint MF when asked) and its
optimizer (AdamW with the stage masks), split into an nnx (graphdef, state) pair on the device mesh.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lgcd_jax import ema, sharding
from lgcd_jax.baselines import common, mf
from lgcd_jax.clues import source as clue_source
from lgcd_jax.data.prepared import PreparedDataset, direction_domains
from lgcd_jax.model.lgcd import LGCD, uses_clues
from lgcd_jax.text import encoders as text_encoders


def method_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The LGCD switches each trained method implies (the ablation switches stay the user's for lgcd).

  The MF anchor (model.anchor = "mf"), x0 in the items' space (model.x0 = "items") and the
  denoiser's training on the noised guess (train.from_guess_share) are LGCD's own design, so the
  EMCDR and DMCDR baselines generate from scratch (anchor "none") towards the target user
  representation Enc_T (x0 "encoder"), as published, whatever the config says; they keep the rest of
  it, the item tables' initialisation (model.id_init) and the schedule included.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  if config.method in ("dmcdr", "emcdr"):
    c.model.anchor = "none"
    c.model.x0 = "encoder"
    c.train.from_guess_share = 0.0
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
  train.joint_encoder_weight > 0 trains it in stage 2 too. train.ema_decay > 0 keeps a moving average
  of the weights in the optimizer's state (lgcd_jax/ema.py). train.stage2_frozen names more
  parameters (comma-separated dotted prefixes, e.g. "src_table.id_embedding") that stage 2 keeps as
  stage 1 left them.
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
  joint = float(t.get("joint_encoder_weight", 0.0)) > 0
  frozen = tuple(p.strip() for p in str(t.get("stage2_frozen", "")).split(",") if p.strip())
  if not joint or frozen:
    encoder_steps = int(t.encoder_steps)
    stage1_only = optax.scale_by_schedule(
        lambda count: jnp.where(count < encoder_steps, 1.0, 0.0))

    def stage1_param(path) -> bool:
      return (not joint and _is_target_encoder(path)) or _path_name(path).startswith(frozen)
    parts.append(optax.masked(stage1_only, lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: stage1_param(path), params)))
  decay = float(t.get("ema_decay", 0.0))
  if decay:
    parts.append(ema.track(decay))  # last: it averages the weights the final updates produce
  return optax.chain(*parts)


def _path_name(path) -> str:
  """"src_table.id_embedding" for a parameter's pytree path (what train.stage2_frozen names)."""
  return ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


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
