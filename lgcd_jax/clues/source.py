"""Where a run's clues come from: shards written by `pipelines/` (config.clues.clue_dir), or the
offline neighbour bridge computed in-process (DESIGN.md §5) when no clue_dir is given.

A user without a clue row gets an empty clue, in training and in evaluation alike. So `coverage` counts,
per pool and split, how many users have one (runs log it in metrics.jsonl and results.json), and a clue
directory that covers fewer held-out users than config.clues.min_eval_coverage (default 1.0: all) stops
the run: a partial clue set would evaluate clue users and no-clue users mixed, unlike training.
"""

from __future__ import annotations

import logging

import numpy as np

from lgcd_jax.clues import bridge
from lgcd_jax.data import clue_records as clues_lib
from lgcd_jax.data.prepared import SPLITS, PreparedDataset, direction_domains

DEFAULT_MIN_EVAL_COVERAGE = 1.0


class ClueCoverageError(ValueError):
  """A clue directory covers too few held-out users (config.clues.min_eval_coverage)."""


def coverage(clues, ds: PreparedDataset, direction: str) -> dict | None:
  """Per clue pool of `direction` (the source single-domain pool, overlap, valid, test):
  {"users": n, "with_clue": users with a clue row, "empty": of those, rows with no item and no summary}.

  None when there are no clues at all (a model without clue input).
  """
  if clues is None:
    return None
  src, _ = direction_domains(direction)
  pools = {f"{src}_only": ds.pool_user_ids[f"{src}_only"], "overlap": ds.pool_user_ids["overlap"]}
  pools.update({split: ds.eval[direction][split].user_ids for split in SPLITS})
  lengths = clues.items.lengths()
  out = {}
  for pool, ids in pools.items():
    rows = clues.rows(pool, ids)
    have = rows[rows >= 0]
    out[pool] = {"users": int(len(ids)), "with_clue": int(len(have)),
                 "empty": int(np.sum((lengths[have] == 0) & ~clues.has_summary[have].astype(bool)))}
  return out


def check_eval_coverage(config, cov: dict | None, where: str) -> None:
  """Raises ClueCoverageError when the clues cover fewer valid or test users than
  config.clues.min_eval_coverage (a share in [0, 1])."""
  min_share = float(config.clues.get("min_eval_coverage", DEFAULT_MIN_EVAL_COVERAGE))
  if not 0.0 <= min_share <= 1.0:
    raise ValueError(f"clues.min_eval_coverage must be a share in [0, 1], got {min_share}")
  if cov is None:
    return
  short = [f"{cov[s]['with_clue']} of {cov[s]['users']} {s} users" for s in SPLITS
           if cov[s]["users"] and cov[s]["with_clue"] < min_share * cov[s]["users"]]
  if short:
    raise ClueCoverageError(
        f"the clues in {where} cover only {' and '.join(short)} of {config.direction}, below "
        f"clues.min_eval_coverage={min_share:g}; the users without one would be evaluated with an "
        f"empty clue. Write the missing clues (python -m pipelines.pseudo_overlap with --users=valid "
        f"or --users=test) or lower --config.clues.min_eval_coverage.")


def load_or_make(config, ds: PreparedDataset, titles: dict | None = None):
  src, tgt = direction_domains(config.direction)
  if config.clues.clue_dir:
    clues = clues_lib.load_clues(config.clues.clue_dir, config.direction,
                                 num_target_items=ds.num_items(tgt))
    if clues.text_dim != config.clues.text_dim:
      raise ValueError(f"clues in {config.clues.clue_dir} have text_dim {clues.text_dim}, "
                       f"config.clues.text_dim is {config.clues.text_dim}")
    logging.info("clues: %s (%d users) from %s", clues.source, len(clues.user_ids),
                 config.clues.clue_dir)
    check_eval_coverage(config, coverage(clues, ds, config.direction), config.clues.clue_dir)
    return clues
  titles = titles or {}
  clues = bridge.make_bridge_clues(
      ds, config.direction, mode=config.clues.bridge_mode, k=config.clues.bridge_k,
      clue_len=config.data.clue_len, text_weight=config.clues.text_weight,
      src_title_emb=titles.get(src), tgt_title_emb=titles.get(tgt), maxlen=config.data.maxlen,
      text_dim=config.clues.text_dim, mf_rank=config.baselines.mf_rank,
      mf_item_power=config.baselines.mf_item_power)
  logging.info("clues: %s computed in-process for %d users (an offline stand-in for an LLM)",
               clues.source, len(clues.user_ids))
  return clues
