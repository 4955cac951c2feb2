"""LLM-only: rank target items by the language clue alone, with no collaborative model on top.

With clue shards from an LLM (config.clues.clue_dir), a user's score for item i is the similarity of the
clue item i mapped to (plus a small bonus for the LLM's rank, so that its order breaks ties); items the
clue does not name tie at zero. Without shards, the offline bridge stands in for the LLM, built with the
config's clues.bridge_mode, bridge_k and text_weight (as the bridge clues of a trained run are), and
ranking by its full scores is, in mode "neighbours", the user-neighbour baseline (DESIGN.md §1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgcd_jax.clues import bridge
from lgcd_jax.data.prepared import PreparedDataset, direction_domains


def clue_scores(clue: jax.Array, clue_sim: jax.Array, num_items: int) -> jax.Array:
  """[B, C] clue items + 1 (0 = pad) and their similarities -> [B, num_items] scores."""
  b, c = clue.shape
  rank_bonus = 1e-3 * (c - jnp.arange(c, dtype=jnp.float32)) / c  # earlier = more likely
  value = jnp.where(clue > 0, clue_sim + rank_bonus[None, :], 0.0)
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], clue.shape)
  out = jnp.zeros((b, num_items + 1), jnp.float32).at[rows, clue].max(value)
  return out[:, 1:]


class LLMOnly:
  name = "llm_only"

  def __init__(self, ds: PreparedDataset, direction: str, config, clues=None, titles=None):
    _, tgt = direction_domains(direction)
    self.num_tgt = ds.num_items(tgt)
    self.clues = clues
    self.source = getattr(clues, "source", None)
    self.bridge = None
    if clues is None:
      src, _ = direction_domains(direction)
      mode = config.clues.bridge_mode
      self.bridge = bridge.make_bridge(ds, direction, mode=mode, k=config.clues.bridge_k,
                                       text_weight=config.clues.text_weight,
                                       src_title_emb=(titles or {}).get(src),
                                       tgt_title_emb=(titles or {}).get(tgt),
                                       mf_rank=config.baselines.mf_rank,
                                       mf_item_power=config.baselines.mf_item_power)
      self.source = f"bridge:{mode}"
    self._clue_scores = jax.jit(clue_scores, static_argnums=2)

  def score(self, batch):
    if self.bridge is not None:
      exclude = -np.ones(batch["src"].shape[0], np.int32)  # eval users are not training users
      return self.bridge.scores(batch["src"], exclude)
    return self._clue_scores(jnp.asarray(batch["clue"]), jnp.asarray(batch["clue_sim"]),
                             self.num_tgt)
