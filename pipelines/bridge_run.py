"""`--backend=bridge`: the offline stand-in for an LLM (no request, no cost, DESIGN.md §5).

Neighbour (or text, or MF) clues from `lgcd_jax.clues.bridge.make_bridge_clues` for the selected users,
written as the same shards and summary as an LLM run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lgcd_jax.data.prepared import direction_domains
from lgcd_jax.text.encoders import title_embeddings
from pipelines import shards, summary
from pipelines.options import Options


def dry_run(config, tasks) -> dict:
  """What --dry_run prints for the bridge: it sends nothing and costs nothing."""
  report = {"dry_run": True, "backend": "bridge", "direction": config.direction,
            "users_requested": len(tasks), "requests": 0, "estimated_cost_usd": 0.0}
  print(json.dumps(report, indent=2))
  return report


def run_bridge(config, opts: Options, ds, tasks, start: float) -> dict:
  """Bridge clues for `tasks`, saved under --out; returns the summary (also written there)."""
  # Imported here, not at the top: the bridge brings in JAX, which `python -m pipelines.pseudo_overlap`
  # does not load for the LLM backends, --dry_run or --help.
  from lgcd_jax.clues import bridge  # pylint: disable=g-import-not-at-top
  direction = config.direction
  src, tgt = direction_domains(direction)
  to_bridge = {f"{src}_only": "single", "overlap": "overlap", "valid": "valid", "test": "test"}
  pools = list(dict.fromkeys(to_bridge[t.pool] for t in tasks))
  titles = {}
  if config.clues.bridge_mode == "text" or config.clues.text_weight != 0:
    titles = title_embeddings(config, ds, [src, tgt])
  stats: dict = {}
  clues = bridge.make_bridge_clues(
      ds, direction, mode=config.clues.bridge_mode, k=config.clues.bridge_k,
      clue_len=config.data.clue_len, text_weight=config.clues.text_weight,
      src_title_emb=titles.get(src), tgt_title_emb=titles.get(tgt), maxlen=config.data.maxlen,
      text_dim=config.clues.text_dim, pools=pools, progress=opts.progress, stats=stats,
      mf_rank=config.baselines.mf_rank, mf_item_power=config.baselines.mf_item_power)
  wanted = {(t.pool, t.user_id) for t in tasks}
  rows = [r for r in range(len(clues)) if (str(clues.pools[r]), str(clues.user_ids[r])) in wanted]
  if len(rows) != len(clues):
    clues = shards.subset(clues, rows)
  rows_written = shards.save(clues, opts, tasks, ds.num_items(tgt))
  lengths = clues.items.lengths()
  counts = {
      "cache_hits": 0,
      "input_tokens": 0,
      "output_tokens": 0,
      "estimated_cost_usd": 0.0,
      "cost_note": "the bridge is an offline stand-in for an LLM: no request, no cost",
      "hallucinated_share": None,
      "mapped_items_per_user": round(float(lengths.mean()), 3) if len(clues) else None,
      "mapped_similarity": summary.quantiles(clues.sims),
      "similarity_note": "bridge sims are neighbour votes / the user's best vote, not cosines",
      "bridge": {"mode": config.clues.bridge_mode, "k": config.clues.bridge_k,
                 "clue_len": config.data.clue_len, "text_weight": config.clues.text_weight,
                 "pools": {k: v for k, v in stats.items() if isinstance(v, dict)},
                 "seconds": round(float(stats.get("seconds", 0.0)), 3)},
  }
  out = summary.build(config, ds, opts, tasks, backend="bridge", model=None, source=clues.source,
                      prompt_version=None, succeeded=len(clues), failed=0,
                      empty_clue=int(np.sum(lengths == 0)), failure_reasons={}, requests_sent=0,
                      counts=counts, rows_written=rows_written, start=start)
  summary.write(out, Path(opts.out), direction)
  return out
