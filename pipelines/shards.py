"""Writing a run's clues as shards under --out, keeping the rows of users an earlier run wrote and this
run did not ask for (unless --nomerge)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lgcd_jax.data import clue_records as clues_lib
from lgcd_jax.data.ragged import Ragged
from pipelines.options import Options, PipelineError


def subset(c: clues_lib.ClueSet, rows) -> clues_lib.ClueSet:
  """The ClueSet of `rows` of `c`, in that order."""
  rows = np.asarray(rows, np.int64)
  items = [c.items[r] for r in rows]
  sims = [c.sims[c.items.offsets[r]:c.items.offsets[r + 1]] for r in rows]
  summaries = np.empty(len(rows), dtype=object)
  summaries[:] = [str(c.summaries[r]) for r in rows]
  return clues_lib.ClueSet(
      direction=c.direction, user_ids=np.asarray(c.user_ids)[rows], pools=np.asarray(c.pools)[rows],
      items=Ragged.from_lists(items),
      sims=(np.concatenate(sims) if sims else np.zeros(0)).astype(np.float32),
      summary_emb=np.asarray(c.summary_emb)[rows], has_summary=np.asarray(c.has_summary)[rows],
      summaries=summaries, source=c.source)


def save(new: clues_lib.ClueSet, opts: Options, tasks, num_target: int) -> int:
  """Writes the shards (keeping earlier rows of users not asked for now); returns the row count."""
  out = Path(opts.out)
  merged = new
  if opts.merge and (out / new.direction / clues_lib.INDEX_NAME).exists():
    old = clues_lib.load_clues(out, new.direction, num_target_items=num_target)
    asked = {(t.pool, t.user_id) for t in tasks}
    keep = [r for r in range(len(old)) if (str(old.pools[r]), str(old.user_ids[r])) not in asked]
    if keep:
      try:
        merged = clues_lib.merge_clues([subset(old, keep), new])
      except ValueError as e:
        raise PipelineError(f"cannot merge with the clues already in {out / new.direction} ({e}); "
                            "use another --out or --nomerge") from None
  clues_lib.save_clues(merged, out, shard_size=opts.shard_size)
  return len(merged)
