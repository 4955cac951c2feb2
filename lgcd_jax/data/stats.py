"""Prints the statistics table of a prepared dataset: `python -m lgcd_jax.data.stats DIR`."""

from __future__ import annotations

import sys

import numpy as np

from lgcd_jax.data import prepared
from lgcd_jax.data.errors import DataError


def format_table(manifest: dict, ds: prepared.PreparedDataset | None = None) -> str:
  rows = [("items A", manifest["num_items"]["A"]), ("items B", manifest["num_items"]["B"])]
  rows += [(f"users {k}", v) for k, v in manifest["num_users"].items()]
  for direction, splits in manifest["eval_users"].items():
    rows += [(f"eval {direction} {split}", n) for split, n in splits.items()]
  rows.append(("interactions", manifest["num_interactions"]))
  rows.append(("sampled negatives per user", manifest.get("num_negatives", "?")))
  if ds is not None:
    for pool, domains in prepared.POOLS.items():
      for d in domains:
        lengths = ds.pools[pool][d].lengths()
        if len(lengths):
          rows.append((f"{pool} {d} seq length mean/median/max",
                       f"{lengths.mean():.1f} / {np.median(lengths):.0f} / {lengths.max()}"))
    for d in prepared.DOMAINS:
      counts = np.zeros(ds.num_items(d), np.int64)
      for seqs in ds.domain_sequences(d):
        np.add.at(counts, seqs.values, 1)
      rows.append((f"{d} items never seen in training", int((counts == 0).sum())))
      density = counts.sum() / max(1, ds.num_items(d) * sum(len(s) for s in ds.domain_sequences(d)))
      rows.append((f"{d} density", f"{density:.2e}"))
  width = max(len(k) for k, _ in rows)
  lines = [f"source: {manifest.get('source')}"] + [f"{k:<{width}}  {v}" for k, v in rows]
  return "\n".join(lines)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print("usage: python -m lgcd_jax.data.stats PREPARED_DIR", file=sys.stderr)
    return 2
  try:
    ds = prepared.load_prepared(argv[0])
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_table(ds.manifest, ds))
  return 0


if __name__ == "__main__":
  sys.exit(main())
