"""Runs a suite of the paper's tables, one `main.py` subprocess per run, resumably:

  python -m lgcd_jax.experiments --suite=main --config=configs/food_kitchen.py --out=results/fk-main
  python -m lgcd_jax.experiments --suite=ablation --config=configs/food_kitchen.py --out=DIR \
      --directions=A2B --seeds=0,1,2 --config.train.steps=3000

Suites (lgcd_jax/suites.py): main (every method), ablation (LGCD without each component),
conditioning (the five conditioning modes), sensitivity (nK, T, lambda; reported on valid only).
`--config.*` overrides apply to every run of the suite; a run's own overrides (method, direction, seed,
the ablated switch, the swept value) come after them and win.

Each run is `python main.py --config=CONFIG --config.x=... --workdir=DIR/<direction>/<variant>/seed<s>`
in a subprocess, so that a crash or a JAX error in one run does not end the suite and its memory is
freed; its output goes to `<workdir>/run.log`. DIR/index.json (rewritten atomically after every change)
records the suite and each run's state:

  {"suite", "config", "overrides": ["train.steps=3000", ...], "directions", "seeds",
   "baseline_seeds", "base": {swept key: value}, "created", "updated",
   "runs": [{"name", "workdir", "variant", "method", "direction", "seed", "overrides", "param",
             "value", "state": pending|running|done|failed, "attempts", "rc", "error" (log tail),
             "wall_s", "started", "finished", "log"}, ...]}

Running the same command again resumes: a run whose workdir holds results.json is done and skipped;
any other (pending, failed, or left running by a killed suite) is started again in the same workdir, so
main.py resumes it from its latest checkpoint. The suite records a failed run and goes on, and exits
with status 1 at the end if any run failed. A resume must use the same config and overrides (main.py
refuses to resume a checkpoint under a different config).

A finished run is only skipped while its results.json came from the config the suite would run it
with now: after an edit of the config file (or of configs/default.py) a resume stops and names the
stale runs and what changed. `--rerun_stale` moves their workdirs to DIR/stale/ and runs them again.
`--reuse=OTHER_DIR,...` copies in the finished runs of other suites that have exactly a run's config
instead of running it again (the index records `reused_from`).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from lgcd_jax import cli
from lgcd_jax import config_check
from lgcd_jax import suites
from lgcd_jax.data import atomic

MAIN_PY = Path(__file__).resolve().parents[1] / "main.py"
INDEX = "index.json"
STATES = ("pending", "running", "done", "failed")
STALE_DIR = "stale"
# JAX's persistent compilation cache, shared by a suite's runs: seeds of one variant compile the same
# steps (the seed is an argument, not a constant), so only a variant's first run pays for them.
# A JAX_COMPILATION_CACHE_DIR set in the environment wins.
COMPILE_CACHE_DIR = ".jax_cache"
ERROR_TAIL_LINES = 25


def config_overrides(argv: Sequence[str]) -> list[str]:
  """The `--config.key=value` (or `--config.key value`) arguments of `argv`, as "key=value"."""
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      if "=" in arg:
        out.append(arg[len("--config."):])
      elif i + 1 < len(argv):
        out.append(f"{arg[len('--config.'):]}={argv[i + 1]}")
        i += 1
    i += 1
  return out


def command(spec: suites.RunSpec, config_path: str, overrides: Sequence[str], workdir: Path,
            python: str = sys.executable) -> list[str]:
  """main.py's command line for one run: the suite's overrides first, the run's own last (they win)."""
  return [python, str(MAIN_PY), f"--config={config_path}",
          *[f"--config.{o}" for o in (*overrides, *spec.overrides)], f"--workdir={workdir}"]


def run_config(config_path: str, overrides: Sequence[str], base: dict | None = None):
  """The config main.py runs with for `--config=config_path` and these "key=value" overrides, as a
  trained run's results.json records it (with the method's implied switches).

  base: the config file's contents as a dict, when the caller has loaded it already (not modified).
  """
  import ml_collections
  from lgcd_jax import builder  # jax and flax: imported only when a suite checks finished runs
  if base is None:
    base = cli.load_config_file(config_path).to_dict()
  config = ml_collections.ConfigDict(copy.deepcopy(base))
  for override in overrides:
    config_check.apply_override(config, override)
  return builder.method_config(config)


class SuiteError(ValueError):
  """A suite that cannot run as asked (another suite's directory, stale finished runs)."""


class _RunConfigs:
  """Each run's config as a dict (`run_config`), the config file loaded once, at the first call:
  a suite with no finished run to compare never imports the model code."""

  def __init__(self, config_path: str, overrides: Sequence[str]):
    self.config_path, self.overrides, self._base = config_path, tuple(overrides), None

  def __call__(self, spec: suites.RunSpec) -> dict:
    if self._base is None:
      self._base = cli.load_config_file(self.config_path).to_dict()
    return run_config(self.config_path, (*self.overrides, *spec.overrides), self._base).to_dict()


def _results_config(path: Path) -> dict | None:
  """The config a finished run's results.json records; None when it is unreadable (the report
  names it; a suite does not decide on it) or predates recorded configs."""
  try:
    res = _read_json(path)
  except (OSError, ValueError):
    return None
  if not isinstance(res, dict) or not isinstance(res.get("config"), dict):
    return None
  return res["config"]


def stale_runs(specs: Sequence[suites.RunSpec], out: Path, config_path: str,
               overrides: Sequence[str]) -> dict[str, dict]:
  """{run name: {field: (results' value, now)}} for the finished runs whose results.json came from
  another config than the one this suite would run them with."""
  stale, config_of = {}, _RunConfigs(config_path, overrides)
  for spec in specs:
    recorded = _results_config(out / spec.name / "results.json")
    if recorded is None:
      continue
    diffs = config_check.result_differences(recorded, config_of(spec))
    if diffs:
      stale[spec.name] = diffs
  return stale


def reuse_runs(specs: Sequence[suites.RunSpec], out: Path, config_path: str,
               overrides: Sequence[str], reuse: Sequence[str | Path]) -> dict[str, Path]:
  """Copies into `out` each unfinished run of `specs` that another suite's directory in `reuse`
  has finished with the same config (config_check.result_differences finds nothing: e.g. the
  ablation's full LGCD is the conditioning suite's cross-attention run); returns {run name: the
  workdir it came from}. Its results.json, metrics.jsonl and run.log are copied (the log behind a
  line naming where it came from and this suite's command for it)."""
  finished = []  # (workdir, results config) of every finished run in the reuse directories
  for d in reuse:
    d = Path(d)
    if not d.is_dir():
      raise SuiteError(f"--reuse: {d} is not a directory")
    for path in sorted(d.glob("*/*/seed*/results.json")):
      recorded = _results_config(path)
      if recorded is not None:
        finished.append((path.parent, recorded))
  reused, config_of = {}, _RunConfigs(config_path, overrides)
  for spec in specs:
    dest = out / spec.name
    if (dest / "results.json").exists() or not finished:
      continue
    now = config_of(spec)
    src = next((w for w, cfg in finished
                if w.resolve() != dest.resolve() and not config_check.result_differences(cfg, now)),
               None)
    if src is None:
      continue
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "run.log"):
      if (src / name).exists():
        text = (src / name).read_text(encoding="utf-8", errors="replace")
        if name == "run.log":
          cmd = _shown(command(spec, config_path, overrides, dest))
          text = (f"=== reused: the finished run {src.name} of {src.parent.parent.name}/"
                  f"{src.parent.name} in {src.parent.parent.parent.name}, the same config; this "
                  f"suite's command for it: {cmd}\n") + text
        atomic.atomic_write_text(dest / name, text)
    # results.json last: it is what marks the run done.
    atomic.atomic_write_json(dest / "results.json", _read_json(src / "results.json"))
    reused[spec.name] = src
  return reused


def _move_stale(out: Path, name: str) -> Path:
  """Moves DIR/<name> to DIR/stale/<name> (a numbered name if that is taken); returns the new path."""
  dest = out / STALE_DIR / name
  n = 1
  while dest.exists():
    n += 1
    dest = out / STALE_DIR / f"{name}-{n}"
  dest.parent.mkdir(parents=True, exist_ok=True)
  (out / name).rename(dest)
  return dest


def _now() -> float:
  return round(time.time(), 3)


class Index:
  """DIR/index.json: the suite's header and one record per run, saved atomically on every change."""

  def __init__(self, out: Path, header: dict):
    self.out = out
    self.path = out / INDEX
    old = _read_json(self.path)
    if old is not None:
      for key in ("suite", "config", "overrides"):
        if old.get(key) != header.get(key):
          raise SuiteError(
              f"{self.path} was started with {key}={old.get(key)!r}, not {header.get(key)!r}: "
              f"resume with the same --suite, --config and --config.* overrides, or use a new --out")
    self.data = {**(old or {"created": _now()}), **header}
    self.runs = {r["name"]: r for r in (old or {}).get("runs", [])}

  def sync(self, specs: Sequence[suites.RunSpec]) -> list[dict]:
    """Adds the records of new runs; an existing record keeps its state and history."""
    records = []
    for spec in specs:
      rec = self.runs.setdefault(spec.name, {"state": "pending", "attempts": 0, "error": None,
                                             "wall_s": None, "rc": None})
      rec.update(spec.to_json())
      rec["workdir"] = spec.name
      rec["log"] = f"{spec.name}/run.log"
      if (self.out / spec.name / "results.json").exists():
        rec["state"] = "done"
      elif rec["state"] == "done":  # results.json was removed: run it again
        rec["state"] = "pending"
      records.append(rec)
    return records

  def save(self) -> None:
    self.data["updated"] = _now()
    self.data["runs"] = list(self.runs.values())
    atomic.atomic_write_json(self.path, self.data)


def _read_json(path: Path):
  if not path.exists():
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 16384))
      text = f.read().decode("utf-8", "replace")
  except OSError:
    return ""
  # tqdm's carriage returns: keep what a terminal would show last on each line.
  shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
  return "\n".join(shown[-lines:])


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def run_suite(specs: Sequence[suites.RunSpec], out: str | Path, config_path: str,
              overrides: Sequence[str], header: dict | None = None, *,
              echo: Callable[[str], None] = print, python: str = sys.executable,
              jobs: int = 1, rerun_stale: bool = False, reuse: Sequence[str | Path] = ()) -> dict:
  """Runs every spec not yet done, in order, up to `jobs` at a time (each its own subprocess);
  returns {"done": n, "failed": n, "skipped": n}.

  A finished run whose results.json came from another config (`stale_runs`) raises SuiteError
  naming it, or with `rerun_stale` has its workdir moved to DIR/stale/ and runs again. A run that
  a suite directory in `reuse` has finished with the same config is copied in (`reuse_runs`)."""
  if jobs < 1:
    raise ValueError(f"jobs must be >= 1, got {jobs}")
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  index = Index(out, {**(header or {}), "config": config_path, "overrides": list(overrides)})
  records = index.sync(specs)
  stale = stale_runs(specs, out, config_path, overrides)
  if stale and not rerun_stale:
    shown = "; ".join(f"{name} ({config_check.describe(d, limit=3)})"
                      for name, d in list(stale.items())[:4])
    more = f" and {len(stale) - 4} more" if len(stale) > 4 else ""
    raise SuiteError(f"{len(stale)} finished run(s) of {out} came from another config than "
                     f"{config_path} with these overrides gives now: {shown}{more}. Rerun them "
                     f"with --rerun_stale (their workdirs move to {out / STALE_DIR}) or use a new "
                     f"--out")
  for name in stale:
    dest = _move_stale(out, name)
    echo(f"stale: {name} came from another config; moved to {dest}")
    rec = index.runs[name]
    rec.update(state="pending", attempts=0, error=None, wall_s=None, rc=None)
  for name, src in reuse_runs(specs, out, config_path, overrides, reuse).items():
    echo(f"reused: {name} from {src} (the same config)")
    index.runs[name].update(state="done", attempts=0, error=None, wall_s=None, rc=0,
                            reused_from=os.path.relpath(src, out))  # no machine path
  index.save()
  n = len(records)
  counts = {"done": 0, "failed": 0, "skipped": 0}
  suite_start = time.perf_counter()
  run_times = []
  todo = []
  for i, rec in enumerate(records, 1):
    if rec["state"] == "done":
      counts["skipped"] += 1
      echo(f"[{i}/{n}] skip {rec['name']} (results.json present)")
    else:
      todo.append(i)
  running: dict[int, tuple[subprocess.Popen, object, float]] = {}  # i -> (process, log, start)

  def finish(i: int, rc: int) -> None:
    rec, (_, log, start) = records[i - 1], running.pop(i)
    log.close()
    wall = time.perf_counter() - start
    workdir = out / rec["name"]
    rec.update(wall_s=round(wall, 1), finished=_now(), rc=rc)
    if rc == 0 and (workdir / "results.json").exists():
      rec["state"] = "done"
      counts["done"] += 1
      run_times.append(wall)
      left = len(todo) + len(running)
      # Runs finish `jobs` at a time: the time left is the mean run time per concurrent slot.
      eta = (f", ~{_duration(left * sum(run_times) / len(run_times) / jobs)} left"
             if left else "")
      echo(f"[{i}/{n}] done {rec['name']} in {_duration(wall)} "
           f"(suite {_duration(time.perf_counter() - suite_start)}{eta})")
    else:
      rec["state"] = "failed"
      rec["error"] = _tail(workdir / "run.log") or f"exit status {rc}"
      counts["failed"] += 1
      last = rec["error"].strip().splitlines()[-1] if rec["error"].strip() else ""
      echo(f"[{i}/{n}] FAILED {rec['name']} (exit {rc}) after {_duration(wall)}: {last}")
    index.save()

  try:
    while todo or running:
      while todo and len(running) < jobs:
        i = todo.pop(0)
        spec, rec = specs[i - 1], records[i - 1]
        workdir = out / spec.name
        workdir.mkdir(parents=True, exist_ok=True)
        rec.update(state="running", started=_now(), finished=None, error=None, rc=None,
                   attempts=rec.get("attempts", 0) + 1)
        index.save()
        echo(f"[{i}/{n}] start {rec['name']} (attempt {rec['attempts']}, suite "
             f"{_duration(time.perf_counter() - suite_start)} elapsed)")
        cmd = command(spec, config_path, overrides, workdir, python)
        running[i] = (*_start_logged(cmd, workdir / "run.log", rec, (out / COMPILE_CACHE_DIR).resolve()),
                      time.perf_counter())
      for i, (proc, _, _) in list(running.items()):
        rc = proc.poll()
        if rc is not None:
          finish(i, rc)
      if running:
        time.sleep(0.2)
  except BaseException:  # Ctrl-C or a kill of the suite: stop the runs, leave them resumable
    for i, (proc, log, _) in running.items():
      proc.terminate()
    for i, (proc, log, _) in running.items():
      try:
        proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        proc.kill()
      log.close()
      records[i - 1].update(state="pending", error="interrupted", finished=_now())
    index.save()
    raise
  failed = [r["name"] for r in records if r["state"] == "failed"]
  echo(f"suite: {counts['done']} ran, {counts['skipped']} already done, {len(failed)} failed "
       f"of {n} in {_duration(time.perf_counter() - suite_start)}"
       + (f"; failed: {', '.join(failed)} (see their run.log)" if failed else ""))
  return counts


def _shown(cmd: list[str]) -> str:
  """The command as a log shows it: `python` and paths relative to the repository or the working
  directory, so a committed run.log names no directory of the machine it ran on."""
  prefixes = [str(MAIN_PY.parent) + os.sep, os.getcwd() + os.sep]
  args = []
  for a in cmd[1:]:
    for p in prefixes:
      a = a.replace(p, "")
    args.append(a)
  return " ".join(["python", *args])


def _start_logged(cmd: list[str], log_path: Path, rec: dict, cache_dir: Path | None = None):
  """Starts `cmd` with its stdout and stderr appended to `log_path`: (process, open log file).
  cache_dir: JAX's compilation cache for it, unless the environment names one."""
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  if cache_dir is not None:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir))
  log = open(log_path, "ab")
  log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {rec['attempts']}: "
            f"{_shown(cmd)}\n".encode())
  log.flush()
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log


def list_runs(specs: Sequence[suites.RunSpec], out: Path, overrides: Sequence[str],
              config_path: str, echo: Callable[[str], None] = print) -> None:
  old = _read_json(out / INDEX) or {}
  states = {r["name"]: r.get("state") for r in old.get("runs", [])}
  stale = stale_runs(specs, out, config_path, overrides)
  for i, spec in enumerate(specs, 1):
    state = "done" if (out / spec.name / "results.json").exists() else states.get(spec.name,
                                                                                   "pending")
    state = "stale" if spec.name in stale else state
    echo(f"[{i}/{len(specs)}] {spec.name:40s} {state:8s} "
         f"{' '.join(f'--config.{o}' for o in (*overrides, *spec.overrides))}")
  echo(f"{len(specs)} runs; config {config_path}; output {out}")


# --- the command line -------------------------------------------------------------------------------

def _define_flags():
  """CLI flags, defined only when run as a program (importing the module defines none)."""
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/food_kitchen.py.",
                                  lock_config=True)
  flags.DEFINE_enum("suite", None, list(suites.SUITES), "Which suite to run.")
  flags.DEFINE_string("out", None, "The suite's directory: index.json and one workdir per run.")
  flags.DEFINE_list("directions", ["A2B", "B2A"], "Directions to run.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the trained runs.")
  flags.DEFINE_bool("dry_run", False, "List the runs and their states; run nothing.")
  flags.DEFINE_integer("jobs", 1, "Runs at a time (each its own main.py process); e.g. one per "
                       "accelerator, or 2 on a CPU machine whose runs leave cores idle.")
  flags.DEFINE_list("only", [], "Run only these variants (e.g. popularity,mf or lgcd-no_moe); the "
                    "others stay as they are.")
  flags.DEFINE_bool("rerun_stale", False, "Finished runs whose results.json came from another "
                    "config (an edited config file) move to OUT/stale/ and run again; without it "
                    "the suite stops and names them.")
  flags.DEFINE_list("reuse", [], "Other suites' directories: an unfinished run that one of them "
                    "has finished with the same config is copied in instead of run (e.g. the "
                    "ablation's full LGCD as the conditioning suite's cross-attention run).")
  flags.DEFINE_list("nk_values", None, "Sensitivity: data.clue_len values (default 5,10,20,40).")
  flags.DEFINE_list("t_values", None, "Sensitivity: model.diffusion_steps values "
                    "(default 20,50,100,200).")
  flags.DEFINE_list("lambda_values", None, "Sensitivity: train.alignment_weight values "
                    "(default 0,0.01,0.1,1).")
  flags.mark_flags_as_required(["config", "suite", "out"])


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  for d in f.directions:
    if d not in ("A2B", "B2A"):
      raise app.UsageError(f"--directions: {d!r} is not A2B or B2A")
  seeds = [int(s) for s in f.seeds]
  sweeps = {k: [float(x) if k == "lambda" else int(x) for x in v]
            for k, v in (("nK", f.nk_values), ("T", f.t_values), ("lambda", f.lambda_values)) if v}
  config = f.config
  specs = suites.plan(f.suite, f.directions, seeds, config, sweeps)
  try:
    suites.check_overrides(config, specs)
  except KeyError as e:
    raise app.UsageError(str(e)) from None
  if f.only:
    unknown = set(f.only) - {s.variant for s in specs}
    if unknown:
      raise app.UsageError(f"--only: no such variant in this suite: {sorted(unknown)}")
    specs = [s for s in specs if s.variant in f.only]
  config_path = flags.FLAGS["config"].config_filename
  overrides = config_overrides(sys.argv[1:])
  out = Path(f.out)
  if f.dry_run:
    list_runs(specs, out, overrides, config_path)
    return
  header = {"suite": f.suite, "directions": f.directions, "seeds": seeds,
            "baseline_seeds": suites.BASELINE_SEEDS, "base": suites.base_values(config)}
  # `kill PID` stops the suite as Ctrl-C does: the running run is stopped and left resumable.
  signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    counts = run_suite(specs, out, config_path, overrides, header, jobs=f.jobs,
                       rerun_stale=f.rerun_stale, reuse=f.reuse)
  except SuiteError as e:
    cli.fail(str(e))
  except KeyboardInterrupt:
    print(f"interrupted; the same command resumes the suite ({out / INDEX})", file=sys.stderr)
    sys.exit(130)
  if counts["failed"]:
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
