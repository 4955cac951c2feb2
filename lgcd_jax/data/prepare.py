"""Turns raw data into a prepared dataset directory (format: `lgcd_jax/data/prepared.py`).

  python -m lgcd_jax.data.prepare --source=llmcdsr --input=../shared/data/food-kitchen --output=prepared/food-kitchen
  python -m lgcd_jax.data.prepare --source=amazon --source_reviews=F --source_meta=F \
      --target_reviews=F --target_meta=F --kcore=5 --output=DIR [--eval_users=N --seed=S]
  python -m lgcd_jax.data.prepare --source=synthetic --output=DIR [--seed=S --scale=X --overlap_share=P --eval_users=N]

The output is built in a temporary directory and renamed into place: a crash leaves nothing half-made.
Bad input stops with an error naming the file and line, and exit status 2 (as does a missing file or a
bad argument). One process per --output: a second one stops at once, naming the first one's PID.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from lgcd_jax.cli import UserError
from lgcd_jax.data import prepared
from lgcd_jax.data.errors import DataError


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m lgcd_jax.data.prepare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--source", required=True, choices=["llmcdsr", "amazon", "synthetic"])
  p.add_argument("--output", required=True, help="the prepared dataset directory to create")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the sampled negatives (and of the split / generator)")
  p.add_argument("--num_negatives", type=int, default=prepared.DEFAULT_NUM_NEGATIVES)
  g = p.add_argument_group("llmcdsr")
  g.add_argument("--input", help="the release folder (num.txt, train_*.txt, *.pkl)")
  g = p.add_argument_group("amazon")
  for name in ("source_reviews", "source_meta", "target_reviews", "target_meta"):
    g.add_argument(f"--{name}", help="plain or gzip; 2014, 2018 or 2023 layout")
  g.add_argument("--kcore", type=int, default=0, help="k-core filter per domain; 0 = none")
  g.add_argument("--eval_users", type=int, default=None,
                 help="amazon: overlap users held out for valid+test (default 10%%); synthetic: "
                 "held-out users per (direction, split) at scale 1.0 (default 200)")
  g = p.add_argument_group("synthetic")
  g.add_argument("--scale", type=float, default=1.0)
  g.add_argument("--overlap_share", type=float, default=0.3,
                 help="share of training users with histories in both domains")
  return p


def build(args: argparse.Namespace) -> tuple[prepared.RawDataset, dict, dict]:
  """(raw dataset, the arguments to record, extra statistics) for the chosen source."""
  if args.source == "llmcdsr":
    if not args.input:
      raise UserError("--source=llmcdsr needs --input=DIR")
    from lgcd_jax.data import llmcdsr
    raw, stats = llmcdsr.build_llmcdsr(args.input)
    return raw, {"input": args.input}, stats
  if args.source == "amazon":
    files = {k: getattr(args, k) for k in ("source_reviews", "source_meta", "target_reviews",
                                           "target_meta")}
    missing = [f"--{k}" for k, v in files.items() if not v]
    if missing:
      raise UserError(f"--source=amazon needs {', '.join(missing)}")
    if args.kcore < 0:
      raise UserError("--kcore must be >= 0")
    from lgcd_jax.data import amazon
    raw, stats = amazon.build_amazon(**files, kcore=args.kcore, eval_users=args.eval_users,
                                     seed=args.seed, progress=True)
    return raw, {**files, "kcore": args.kcore, "eval_users": args.eval_users, "seed": args.seed}, stats
  from lgcd_jax.data import synthetic
  if args.scale <= 0:
    raise UserError("--scale must be > 0")
  if args.eval_users is not None and args.eval_users < 1:
    raise UserError("--eval_users must be >= 1")
  eval_users = args.eval_users or synthetic.EVAL_USERS
  if not 0.0 < args.overlap_share < 1.0:
    raise UserError("--overlap_share must be in (0, 1)")
  raw = synthetic.generate(seed=args.seed, scale=args.scale, overlap_share=args.overlap_share,
                           eval_users=eval_users)
  return raw, {"seed": args.seed, "scale": args.scale, "overlap_share": args.overlap_share,
               "eval_users": eval_users}, {}


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  start = time.time()
  from lgcd_jax import workdir_lock
  try:
    workdir_lock.acquire(args.output, "--output", beside=True)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    return _prepare(args, start)
  finally:  # the lock file sits beside the output: leave no litter
    workdir_lock.release(args.output, beside=True, remove=True)


def _prepare(args: argparse.Namespace, start: float) -> int:
  try:
    for name in ("input", "source_reviews", "source_meta", "target_reviews", "target_meta"):
      value = getattr(args, name, None)
      if value and not os.path.exists(value):
        raise UserError(f"--{name}={value}: no such file or directory")
    raw, arguments, stats = build(args)
    manifest = prepared.write_prepared(
        raw, args.output, source=args.source, arguments=arguments, seed=args.seed,
        num_negatives=args.num_negatives, overwrite=args.overwrite,
        extra_manifest={"source_stats": stats} if stats else None)
  except (UserError, DataError, FileExistsError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from lgcd_jax.data import stats as stats_mod
  print(stats_mod.format_table(manifest))
  print(f"wrote {args.output} in {time.time() - start:.1f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
