"""The LGCD model's settings: a typed, frozen view of the run config, built once (`from_config`).

The model reads its static settings (hashable Python values, so its graphdef can be a jit
static argument) from here and from nowhere else. Defaults live in one place, `configs/default.py`: a config
lacking a field (e.g. the config stored in an older checkpoint) gets that file's value, never a
second default written here.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from configs import default as default_config
from lgcd_jax.model.denoiser import CONDITIONINGS

SAMPLERS = ("ddpm", "ddim")
ANCHORS = ("none", "mf")
# model.anchor_at_sampling: the anchor's weights when sampling, "trained" or its "initial" profile.
ANCHOR_AT_SAMPLING = ("trained", "initial")
# model.x0: what the diffusion generates for a pair, "encoder" (Enc_T of the target sequence) or
# "items" (the weighted mean of the target items' features, the space the items are scored in).
X0_TARGETS = ("encoder", "items")


@dataclasses.dataclass(frozen=True)
class LGCDSettings:
  """What `LGCD` is built and trained with (from config.model, .train, .data and .clues)."""
  # Shapes.
  d: int
  heads: int
  encoder_layers: int
  denoiser_layers: int
  num_experts: int
  dropout: float
  maxlen: int
  clue_len: int
  text_dim: int
  # Diffusion and sampling.
  diffusion_steps: int
  beta_schedule: str
  beta_start: float
  beta_end: float
  guess_start_step: int
  sampler: str
  sample_steps: int
  # Conditioning and components.
  conditioning: str
  cfg_dropout: float
  cfg_weight: float
  use_diffusion: bool
  use_alignment: bool
  use_guesser: bool
  use_moe: bool
  use_clues: bool
  item_bias: bool
  anchor: str
  anchor_recency: float
  anchor_at_sampling: str
  x0: str
  # Loss weights.
  alignment_weight: float
  alignment_temperature: float
  rec_weight: float
  guesser_weight: float
  guesser_rec_weight: float
  pseudo_weight: float
  encoder_negatives: int
  joint_encoder_weight: float
  residual_weight: float
  from_guess_share: float

  def __post_init__(self):
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"model.conditioning must be one of {CONDITIONINGS}, got "
                       f"{self.conditioning!r}")
    if not 1 <= self.guess_start_step <= self.diffusion_steps:
      raise ValueError(f"guess_start_step must be in [1, {self.diffusion_steps}], "
                       f"got {self.guess_start_step}")
    if self.sampler not in SAMPLERS:
      raise ValueError(f"model.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
    if self.anchor not in ANCHORS:
      raise ValueError(f"model.anchor must be one of {ANCHORS}, got {self.anchor!r}")
    if self.anchor_at_sampling not in ANCHOR_AT_SAMPLING:
      raise ValueError(f"model.anchor_at_sampling must be one of {ANCHOR_AT_SAMPLING}, got "
                       f"{self.anchor_at_sampling!r}")
    if self.x0 not in X0_TARGETS:
      raise ValueError(f"model.x0 must be one of {X0_TARGETS}, got {self.x0!r}")
    if not 0.0 <= self.from_guess_share <= 1.0:
      raise ValueError(f"train.from_guess_share must be in [0, 1], got {self.from_guess_share}")
    if not 0.0 < self.anchor_recency <= 1.0:
      raise ValueError(f"model.anchor_recency must be in (0, 1], got {self.anchor_recency}")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LGCDSettings":
    """The settings of `config`, each missing field taken from configs/default.py."""
    base = default_config.get_base_config()
    c = _merged(base.to_dict(), config.to_dict())
    m, t = c["model"], c["train"]
    return cls(
        d=int(m["d"]), heads=int(m["heads"]), encoder_layers=int(m["encoder_layers"]),
        denoiser_layers=int(m["denoiser_layers"]), num_experts=int(m["num_experts"]),
        dropout=float(m["dropout"]), maxlen=int(c["data"]["maxlen"]),
        clue_len=int(c["data"]["clue_len"]), text_dim=int(c["clues"]["text_dim"]),
        diffusion_steps=int(m["diffusion_steps"]), beta_schedule=str(m["beta_schedule"]),
        beta_start=float(m["beta_start"]), beta_end=float(m["beta_end"]),
        guess_start_step=int(m["guess_start_step"]), sampler=str(m["sampler"]),
        sample_steps=int(m["sample_steps"]), conditioning=str(m["conditioning"]),
        cfg_dropout=float(m["cfg_dropout"]), cfg_weight=float(m["cfg_weight"]),
        use_diffusion=bool(m["use_diffusion"]), use_alignment=bool(m["use_alignment"]),
        use_guesser=bool(m["use_guesser"]), use_moe=bool(m["use_moe"]),
        use_clues=bool(m["use_clues"]), item_bias=bool(m["item_bias"]), anchor=str(m["anchor"]),
        anchor_recency=float(m["anchor_recency"]),
        anchor_at_sampling=str(m["anchor_at_sampling"]), x0=str(m["x0"]),
        alignment_weight=float(t["alignment_weight"]),
        alignment_temperature=float(t["alignment_temperature"]),
        rec_weight=float(t["rec_weight"]), guesser_weight=float(t["guesser_weight"]),
        guesser_rec_weight=float(t["guesser_rec_weight"]), pseudo_weight=float(t["pseudo_weight"]),
        encoder_negatives=int(t["encoder_negatives"]),
        joint_encoder_weight=float(t["joint_encoder_weight"]),
        residual_weight=float(t["residual_weight"]),
        from_guess_share=float(t["from_guess_share"]))


def _merged(base: dict, override: dict) -> dict:
  """`override` over `base`, recursively (nested dicts merged, other values replaced)."""
  out = dict(base)
  for key, value in override.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict):
      out[key] = _merged(out[key], value)
    else:
      out[key] = value
  return out
