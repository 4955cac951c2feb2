"""Finds the prepared dataset a config points at, preparing the synthetic demo data on first use."""

from __future__ import annotations

import logging
from pathlib import Path

from lgcd_jax.data import prepared
from lgcd_jax.data.errors import DataError


def synthetic_dir(config, workdir: str | Path) -> Path:
  s = config.synthetic
  return (Path(workdir) / "data"
          / f"synthetic-seed{s.seed}-scale{s.scale:g}-eval{s.eval_users}-overlap{s.overlap_share:g}")


def load_dataset(config, workdir: str | Path) -> prepared.PreparedDataset:
  if config.data_dir:
    path = Path(config.data_dir)
    if not (path / "manifest.json").exists():
      raise DataError(
          "no prepared dataset here. Prepare it first, e.g.\n  python -m lgcd_jax.data.prepare "
          f"--source=llmcdsr --input=../shared/data/food-kitchen --output={path}", path)
    return prepared.load_prepared(path)
  if not config.synthetic.enabled:
    raise DataError("config.data_dir is empty and config.synthetic.enabled is False: "
                    "nothing to train on")
  path = synthetic_dir(config, workdir)
  if not (path / "manifest.json").exists():
    from lgcd_jax.data import synthetic
    logging.info("preparing synthetic demo data in %s", path)
    s = config.synthetic
    raw = synthetic.generate(seed=s.seed, scale=s.scale, overlap_share=s.overlap_share,
                             eval_users=s.eval_users)
    try:
      prepared.write_prepared(raw, path, source="synthetic",
                              arguments={"seed": s.seed, "scale": s.scale,
                                         "overlap_share": s.overlap_share,
                                         "eval_users": s.eval_users},
                              seed=s.seed)
    except FileExistsError:  # another process (host) won the race: its copy is complete
      pass
  return prepared.load_prepared(path)


def describe(config, ds: prepared.PreparedDataset) -> str:
  """What `results.json` records under "data"."""
  if config.data_dir:
    return str(config.data_dir)
  s = config.synthetic
  return (f"synthetic(seed={s.seed}, scale={s.scale:g}, overlap_share={s.overlap_share:g}, "
          f"eval_users={s.eval_users})")
