"""The runs of the paper's tables (issue 12): which methods and config overrides make each suite.

A suite is a list of `RunSpec`s; `lgcd_jax.experiments` runs them (one `main.py` subprocess each) and
`lgcd_jax.report` reads them back. Nothing here runs anything or imports JAX, so that listing a suite
(`--dry_run`) is instant.

Baselines (popularity, co-occurrence, the joint MF and its recency-weighted fold-in, llm_only) are
deterministic given the data: the main suite runs them once per direction, with seed 0, and the report
shows them without a spread. Trained methods (EMCDR, DMCDR, LGCD) run once per seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from lgcd_jax.methods import BASELINES, TRAINED

SUITES = ("main", "ablation", "conditioning", "sensitivity")
BASELINE_SEEDS = "baselines are deterministic: run once per direction, with seed 0"

# (variant name, overrides) of the ablation: LGCD without each component.
ABLATIONS = (
    ("lgcd", ()),
    ("lgcd-no_diffusion", ("model.use_diffusion=False",)),
    ("lgcd-no_pseudo", ("model.use_pseudo=False",)),
    ("lgcd-no_alignment", ("model.use_alignment=False",)),
    ("lgcd-no_guesser", ("model.use_guesser=False",)),
    ("lgcd-no_moe", ("model.use_moe=False",)),
    ("lgcd-no_cyclic_batch", ("model.cyclic_batch=False",)),
)
# A config without pseudo pairs (model.use_pseudo=False, as configs/food_kitchen.py chose on
# validation) would run the full model again for these two rows: removing what is already off, and
# the cyclic batch, which alternates real and pseudo batches and so does nothing without them. They
# measure adding pseudo pairs instead, and the cyclic batch on top of those.
WITHOUT_PSEUDO_ABLATIONS = {
    "lgcd-no_pseudo": ("lgcd-with_pseudo", ("model.use_pseudo=True",)),
    "lgcd-no_cyclic_batch": ("lgcd-with_pseudo-no_cyclic_batch",
                             ("model.use_pseudo=True", "model.cyclic_batch=False")),
}


def ablations(base_config=None) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """ABLATIONS as they apply to `base_config`: with its pseudo pairs off, the pseudo-pair rows
  become WITHOUT_PSEUDO_ABLATIONS (without a config: ABLATIONS as listed)."""
  if base_config is None or base_value(base_config, "model.use_pseudo"):
    return ABLATIONS
  return tuple(WITHOUT_PSEUDO_ABLATIONS.get(v, (v, o)) for v, o in ABLATIONS)


CONDITIONINGS = ("cross_attention", "linear", "cfg", "collab_only", "semantic_only")

# Sensitivity sweeps: short name -> (config key, default values). Reported on valid only.
SWEEPS = {
    "nK": ("data.clue_len", (5, 10, 20, 40)),
    "T": ("model.diffusion_steps", (20, 50, 100, 200)),
    "lambda": ("train.alignment_weight", (0.0, 0.01, 0.1, 1.0)),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run: `name` is also its workdir under the suite's directory."""
  name: str  # e.g. "A2B/lgcd-no_diffusion/seed0"
  variant: str  # e.g. "lgcd-no_diffusion"; the row of the report's table
  method: str
  direction: str
  seed: int
  overrides: tuple[str, ...]  # "key=value" config overrides (without "--config."), run-specific
  param: str | None = None  # sensitivity: the swept config key
  value: Any = None  # sensitivity: its value

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["overrides"] = list(self.overrides)
    return d


def _format(value) -> str:
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _spec(variant: str, method: str, direction: str, seed: int, extra: Sequence[str] = (),
          param: str | None = None, value=None) -> RunSpec:
  overrides = (f"method={method}", f"direction={direction}", f"seed={seed}", *extra)
  return RunSpec(f"{direction}/{variant}/seed{seed}", variant, method, direction, int(seed),
                 tuple(overrides), param, value)


def _value_name(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def plan(suite: str, directions: Sequence[str], seeds: Sequence[int], base_config=None,
         sweeps: dict[str, Sequence] | None = None) -> list[RunSpec]:
  """The runs of `suite`, direction by direction, then seed by seed.

  `base_config` (the suite's config with the user's overrides) decides the ablation's pseudo-pair
  rows (`ablations`) and supplies the defaults the sensitivity sweep starts from: a swept value
  equal to it is the plain "lgcd" run, which every sweep shares, and `guess_start_step` is capped
  at each swept T. `sweeps` replaces SWEEPS' values by short name.
  """
  if suite not in SUITES:
    raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
  runs = []
  for d in directions:
    if suite == "main":
      runs += [_spec(m, m, d, 0) for m in BASELINES]
    for s in seeds:
      if suite == "main":
        runs += [_spec(m, m, d, s) for m in TRAINED]
      elif suite == "ablation":
        runs += [_spec(v, "lgcd", d, s, o) for v, o in ablations(base_config)]
      elif suite == "conditioning":
        runs += [_spec(f"lgcd-cond_{c}", "lgcd", d, s, (f"model.conditioning={c}",))
                 for c in CONDITIONINGS]
      else:
        runs += _sensitivity(d, s, base_config, sweeps or {})
  return runs


def _sensitivity(direction: str, seed: int, base_config, sweeps: dict) -> list[RunSpec]:
  runs = [_spec("lgcd", "lgcd", direction, seed)]
  for short, (key, values) in SWEEPS.items():
    base = base_value(base_config, key)
    for value in sweeps.get(short, values):
      value = type(base)(value) if base is not None else value
      if value == base:
        continue  # the plain "lgcd" run
      extra = [f"{key}={_format(value)}"]
      if key == "model.diffusion_steps" and base_config is not None:
        extra.append(f"model.guess_start_step={min(int(base_config.model.guess_start_step), value)}")
      runs.append(_spec(f"lgcd-{short}{_value_name(value)}", "lgcd", direction, seed, extra,
                        key, value))
  return runs


def base_value(config, key: str):
  """The value of dotted `key` in `config` (None without a config)."""
  if config is None:
    return None
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def base_values(config) -> dict:
  """The sweeps' config keys and their values in `config`: the report's reference points."""
  return {key: base_value(config, key) for key, _ in SWEEPS.values()}


def check_overrides(config, specs: Sequence[RunSpec]) -> None:
  """Raises KeyError naming the first run override whose key `config` lacks (a renamed field would
  otherwise fail every run of a suite, one subprocess at a time)."""
  for spec in specs:
    for override in spec.overrides:
      key = override.split("=", 1)[0]
      try:
        base_value(config, key)
      except (KeyError, AttributeError):
        raise KeyError(f"run {spec.name}: the config has no field {key!r}") from None
