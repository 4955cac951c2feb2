"""The bench's own report of each `python -m lgcd_jax.bench --json` output (benchmarks/accelerator.sh).

  python benchmarks/summarise_bench.py OUT/sampling.json OUT/scale.json

Each file's rows print as `python -m lgcd_jax.bench` prints them (`bench.print_result`). A file that
is missing, empty, cut short (a step stopped at its time limit) or not a bench result is named and
skipped, so the figures of the steps that finished still print.
"""

import json
import sys

from lgcd_jax import bench


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
  if not isinstance(result, dict):
    print(f"{path}: not a bench result (a JSON {type(result).__name__})")
    return None
  return result


def main(paths: list[str]) -> int:
  if not paths:
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  for path in paths:
    result = _load(path)
    if result is None:
      continue
    print(f"== {path}")
    try:
      bench.print_result(result)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      print(f"{path}: not a bench result of this version ({type(e).__name__}: {e})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
