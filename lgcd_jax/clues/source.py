"""Where a run's clues come from: shards written by `pipelines/` (config.clues.clue_dir), or the
offline neighbour bridge computed in-process (DESIGN.md §5) when no clue_dir is given."""

from __future__ import annotations

import logging

from lgcd_jax.data import clues as clues_lib
from lgcd_jax.data.prepared import PreparedDataset, direction_domains


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
    return clues
  from lgcd_jax.clues import bridge
  titles = titles or {}
  clues = bridge.make_bridge_clues(
      ds, config.direction, mode=config.clues.bridge_mode, k=config.clues.bridge_k,
      clue_len=config.data.clue_len, text_weight=config.clues.text_weight,
      src_title_emb=titles.get(src), tgt_title_emb=titles.get(tgt), maxlen=config.data.maxlen,
      text_dim=config.clues.text_dim)
  logging.info("clues: %s computed in-process for %d users (an offline stand-in for an LLM)",
               clues.source, len(clues.user_ids))
  return clues
