"""Config values a run can use, and which config changes a resumed run may make.

`validate` stops a bad value (a method, direction, sampler, ... that does not exist, a non-positive
size) with one line before any work. `resume_differences` compares a checkpoint's config with the
run's: only the fields in RESUMABLE may change when a run continues its workdir. `override_hash`
names what a run changed from its config file, for the default workdir name. `result_differences`
says whether a finished run's results.json came from the config a suite would run it with now.
"""

from __future__ import annotations

import hashlib
import json

from lgcd_jax import ema
from lgcd_jax.cli import UserError
from lgcd_jax.clues import bridge
from lgcd_jax.data.pipeline import REAL_PAIRS, parse_length_buckets
from lgcd_jax.data.prepared import DIRECTIONS
from lgcd_jax.methods import METHODS
from lgcd_jax.model import diffusion
from lgcd_jax.model.denoiser import CONDITIONINGS
from lgcd_jax.model.settings import SAMPLERS, X0_TARGETS
from lgcd_jax.text.encoders import ENCODERS

# Fields a resumed run may change: how long it trains and how often it evaluates, logs and saves.
# A longer train.steps continues the run; its learning-rate schedule stays the first run's
# (`builder.make_optimizer`: cosine over the first run's steps, then constant at lr/10).
RESUMABLE = ("train.steps", "train.eval_every", "train.log_every", "train.checkpoint_every",
             "data.eval_batch_size", "data.eval_length_buckets", "workdir")


def _choices() -> dict[str, tuple]:
  """The allowed values of enumerated fields, read from the code that uses them (never copied)."""
  return {
      "method": tuple(METHODS),
      "direction": tuple(DIRECTIONS),
      "model.conditioning": tuple(CONDITIONINGS),
      "model.sampler": tuple(SAMPLERS),
      "model.beta_schedule": tuple(diffusion.SCHEDULE_KINDS),
      "clues.bridge_mode": tuple(bridge.MODES),
      "clues.encoder": tuple(ENCODERS),
      "data.real_pairs": tuple(REAL_PAIRS),
      "model.x0": tuple(X0_TARGETS),
  }


POSITIVE = ("data.maxlen", "data.clue_len", "data.batch_size", "data.eval_batch_size", "model.d",
            "model.heads", "model.diffusion_steps", "model.sample_steps", "train.eval_every",
            "train.log_every", "train.checkpoint_every", "clues.text_dim")
NON_NEGATIVE = ("train.encoder_steps", "train.steps", "data.length_window")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def validate(config) -> None:
  """Raises UserError naming the first field whose value a run cannot use."""
  for field, allowed in _choices().items():
    value = _get(config, field)
    if value is not None and value not in allowed:
      raise UserError(f"config.{field} must be one of {', '.join(map(str, allowed))}; "
                      f"got {value!r}")
  for field in POSITIVE + NON_NEGATIVE:
    value = _get(config, field)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < (field in POSITIVE):
      raise UserError(f"config.{field} must be an integer >= {int(field in POSITIVE)}; "
                      f"got {value!r}")
  maxlen = _get(config, "data.maxlen")
  for field in ("data.length_buckets", "data.eval_length_buckets"):
    spec = _get(config, field)
    if spec and maxlen:
      try:
        parse_length_buckets(spec, maxlen, field)
      except ValueError as e:
        raise UserError(f"config.{e}") from None
  decay = _get(config, "train.ema_decay")
  if decay:  # 0: no weight average; else the range `ema.track` accepts
    try:
      ema.track(decay)
    except ValueError as e:
      raise UserError(f"config.{e}") from None
  m = config.get("model")
  if m is not None and "guess_start_step" in m and "diffusion_steps" in m:
    if not 1 <= m.guess_start_step <= m.diffusion_steps:
      raise UserError(f"config.model.guess_start_step must be in [1, model.diffusion_steps = "
                      f"{m.diffusion_steps}]; got {m.guess_start_step}")


def flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _plain(config) -> dict:
  """A config (ConfigDict, dict or its JSON) as plain JSON values, flattened to dotted keys."""
  if isinstance(config, str):
    return flatten(json.loads(config))
  if hasattr(config, "to_json"):
    return flatten(json.loads(config.to_json()))
  return flatten(json.loads(json.dumps(config)))


_MISSING = "<absent>"


def differences(old, new, ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
  """{dotted field: (old value, new value)} for every field that differs, outside `ignore`."""
  a, b = _plain(old), _plain(new)
  return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
          if k not in ignore and a.get(k, _MISSING) != b.get(k, _MISSING)}


def _with_defaults(old, new) -> tuple[dict, dict]:
  """(old, new) flattened, with each field `old` lacks but `new` has (a field added since `old` was
  written) taken from configs/default.py, as settings.py reads an older checkpoint."""
  from configs import default as default_config
  base = _plain(default_config.get_base_config())
  old, new = _plain(old), _plain(new)
  return {**{k: base[k] for k in new if k not in old and k in base}, **old}, new


def resume_differences(checkpoint_config, config) -> dict[str, tuple]:
  """What differs between a checkpoint's config and a resumed run's, outside RESUMABLE; a field
  added to the code since the checkpoint was written counts as its default."""
  return differences(*_with_defaults(checkpoint_config, config), ignore=RESUMABLE)


def describe(diffs: dict[str, tuple], limit: int = 6) -> str:
  items = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in diffs.items()]
  more = f" and {len(items) - limit} more" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


# Fields that do not change a finished run's figures: where it ran and how often it logged or saved.
RESULT_IRRELEVANT = ("workdir", "train.log_every", "train.checkpoint_every", "data.eval_batch_size",
                     "data.eval_length_buckets")


# What a baseline (methods.BASELINES: fitted, not trained) reads of its config; the model's and
# training's fields do not change its figures.
BASELINE_FIELDS = ("data_dir", "direction", "method", "data.maxlen", "data.clue_len", "baselines.",
                   "clues.", "synthetic.")


def result_differences(results_config, config) -> dict[str, tuple]:
  """{field: (the results' value, config's value)} where a finished run's config (results.json's
  "config") differs from `config` in anything that changes its figures. A field the results lack
  (written before the field existed) counts as configs/default.py's value, as settings.py reads an
  older checkpoint."""
  from lgcd_jax.methods import BASELINES
  old, new = _with_defaults(results_config, config)
  diffs = differences(old, new, ignore=RESULT_IRRELEVANT)
  if new.get("method") in BASELINES:
    diffs = {k: v for k, v in diffs.items()
             if any(k == f or (f.endswith(".") and k.startswith(f)) for f in BASELINE_FIELDS)}
  return diffs


def apply_override(config, override: str) -> None:
  """Sets one "dotted.key=value" override on an unlocked ConfigDict, the value read as the field's
  type (as `--config.dotted.key=value` would be); raises ValueError naming the override."""
  key, sep, text = override.partition("=")
  if not sep:
    raise ValueError(f"override {override!r} is not key=value")
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  old = node[leaf]
  try:
    if isinstance(old, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError("not true or false")
      value = text.lower() in ("true", "1")
    elif isinstance(old, int):
      value = int(text)
    elif isinstance(old, float):
      value = float(text)
    elif old is None or isinstance(old, str):
      value = text
    else:
      raise ValueError("only bool, int, float and str fields can be overridden")
  except ValueError as e:
    raise ValueError(f"override {override!r}: {key} is a {type(old).__name__} ({e})") from None
  node[leaf] = value


def override_hash(base, config) -> str:
  """8 hex digits naming what `config` changes from `base` (its config file's own values), outside
  the fields a workdir name shows anyway (method, direction) and those a resume may change; "" when
  nothing else changed. Two runs with different settings never get the same default workdir."""
  diffs = differences(base, config, ignore=RESUMABLE + ("method", "direction"))
  if not diffs:
    return ""
  text = json.dumps({k: b for k, (_, b) in diffs.items()}, sort_keys=True)
  return hashlib.blake2b(text.encode("utf-8"), digest_size=4).hexdigest()
