"""One line per row of `python -m lgcd_jax.bench --json` outputs (benchmarks/accelerator.sh).

  python benchmarks/summarise_bench.py OUT/sampling.json OUT/scale.json

A file that is missing, empty or cut short (a step stopped at its time limit) is named and skipped,
so the figures of the steps that finished still print.
"""

import json
import sys


def _load(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    print(f"{path}: not read ({e.strerror})")
    return None
  # The bench prints its JSON object as the last line of stdout.
  lines = [line for line in text.splitlines() if line.startswith("{")]
  try:
    result = json.loads(lines[-1])
  except (IndexError, ValueError):
    print(f"{path}: no JSON result (the step failed or ran out of time; see its .log)")
    return None
  return result if isinstance(result, dict) else None


def _num(value, fmt: str) -> str:
  return format(value, fmt) if isinstance(value, (int, float)) else "-"


def _mib(n) -> str:
  return f"{n / 2**20:,.0f} MiB" if isinstance(n, (int, float)) else "-"


def lines(result: dict) -> list[str]:
  out = [f"device: {result.get('device')}"]
  for r in result.get("sampling", []):
    out.append(f"sampling batch {r.get('batch_size')} {r.get('sampler')}-{r.get('steps')} "
               f"{r.get('precision')}: {_num(r.get('users_per_s'), ',.0f')} users/s (best "
               f"{_num(r.get('best_users_per_s'), ',.0f')}), "
               f"{_num(r.get('flops_per_user'), '.3e')} FLOPs/user, "
               f"{_num(r.get('peak_fraction'), '.1%')} of peak, peak memory "
               f"{_mib(r.get('peak_bytes'))}, compile {_num(r.get('compile_s'), '.1f')} s")
  for r in result.get("catalogue", []):
    timed = isinstance(r.get("median_s"), float) and r["median_s"] == r["median_s"]
    out.append(f"catalogue {r.get('items'):,} items, batch {r.get('batch_size')}, top-k chunk "
               f"{r.get('topk_chunk') or 'full'}: "
               + (f"{_num(r.get('users_per_s'), ',.0f')} users/s, " if timed else "compiled only, ")
               + f"peak memory {_mib(r.get('peak_bytes'))}")
  train = result.get("train")
  if isinstance(train, dict):
    for t in (train.get("encoder", {}), train):
      out.append(f"train step, {t.get('stage')} stage, batch {t.get('batch_size')}: "
                 f"{_num(t.get('users_per_s'), ',.0f')} users/s, "
                 f"{_num(t.get('achieved_flops_per_s'), '.3e')} FLOP/s "
                 f"({_num(t.get('peak_fraction'), '.1%')} of peak)")
  return out


def main(paths: list[str]) -> int:
  if not paths:
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  for path in paths:
    result = _load(path)
    if result is not None:
      print(f"== {path}")
      print("\n".join(lines(result)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
