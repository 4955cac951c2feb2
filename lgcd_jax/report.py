"""A suite's report: `python -m lgcd_jax.report DIR` writes DIR/REPORT.md, DIR/report.json and
DIR/plots/*.png from whatever runs DIR holds (a suite of `lgcd_jax.experiments`, finished or not).

Numbers are read only from each run's results.json (the final valid and test metrics, with the
by_source_length buckets) and metrics.jsonl (its `eval` records on valid, for the curves over training
steps). Over seeds a cell is "mean ± std" (sample standard deviation, n - 1); a single run shows its
value alone; a variant with no finished run shows "missing", and the index's unfinished runs are listed
with their state. The sensitivity suite is reported on valid only (its test figures are never shown, so
nothing there is chosen on test). report.json holds every aggregated figure the tables show.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from lgcd_jax import suites
from lgcd_jax.data import atomic

SAMPLED = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
FULL = ("HR@10", "NDCG@10")
BUCKETS = ("0-1", "2-3", "4-7", "8+")
HEADLINE = ("sampled", "HR@5")
REFERENCE = {"ablation": "lgcd", "conditioning": "lgcd-cond_cross_attention"}
SWEEP_LABELS = {key: short for short, (key, _) in suites.SWEEPS.items()}
PLOTS = "plots"


# --- reading ----------------------------------------------------------------------------------------


def _read_json(path: Path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _eval_curve(path: Path) -> list[tuple[int, float]]:
  """(step, valid sampled HR@5) of each `eval` record with a step; a step logged twice (a resumed
  run evaluates it again) keeps its last value."""
  points = {}
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          rec = json.loads(line)
        except ValueError:
          continue  # a line cut by a crash
        if rec.get("kind") == "eval" and rec.get("split") == "valid" and "step" in rec:
          points[int(rec["step"])] = float(rec[HEADLINE[0]][HEADLINE[1]])
  except OSError:
    return []
  return sorted(points.items())


def load_suite(out: Path) -> dict:
  """{"suite", "runs": [{name, variant, direction, seed, param, state, error, results, curve}]}.

  With DIR/index.json the planned runs (finished or not) come from it; without one, every
  DIR/<direction>/<variant>/seed<s>/results.json found is a run.
  """
  index = _read_json(out / "index.json") or {}
  records = index.get("runs")
  if records is None:
    records = []
    for path in sorted(out.glob("*/*/seed*/results.json")):
      direction, variant, seed = path.parent.relative_to(out).parts
      records.append({"name": f"{direction}/{variant}/{seed}", "variant": variant,
                      "direction": direction, "seed": int(seed[len("seed"):]), "state": "done",
                      "param": _swept_param(variant)})
  runs = []
  for rec in records:
    workdir = out / rec.get("workdir", rec["name"])
    results = _read_json(workdir / "results.json")
    runs.append({**{k: rec.get(k) for k in ("name", "variant", "direction", "seed", "param",
                                            "value", "error")},
                 "state": "done" if results else rec.get("state", "pending"),
                 "results": results, "curve": _eval_curve(workdir / "metrics.jsonl")})
  return {"suite": index.get("suite") or _guess_suite(runs), "runs": runs,
          "overrides": index.get("overrides", []), "config": index.get("config")}


def _swept_param(variant: str) -> str | None:
  """The config key a sensitivity variant's name ("lgcd-nK5", "lgcd-T20", ...) sweeps."""
  for short, (key, _) in suites.SWEEPS.items():
    rest = variant[len(f"lgcd-{short}"):]
    if variant.startswith(f"lgcd-{short}") and rest[:1].isdigit():
      return key
  return None


def _guess_suite(runs: list[dict]) -> str:
  variants = {r["variant"] for r in runs}
  if any(v.startswith("lgcd-cond_") for v in variants):
    return "conditioning"
  if any(v.startswith(("lgcd-no_", "lgcd-with_")) for v in variants):
    return "ablation"
  if any(r.get("param") for r in runs):
    return "sensitivity"
  return "main"


# --- aggregating ------------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict | None:
  values = [float(v) for v in values if v is not None]
  if not values:
    return None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def fmt(stat: dict | None, digits: int = 4) -> str:
  if stat is None:
    return "missing"
  if stat["std"] is None:
    return f"{stat['mean']:.{digits}f}"
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _metric(results: dict, split: str, proto: str, key: str):
  try:
    return results[split][proto][key]
  except (KeyError, TypeError):
    return None


def _bucket_metric(results: dict, split: str, bucket: str):
  try:
    return results["by_source_length"][split][bucket]
  except (KeyError, TypeError):
    return None


def _order(runs: list[dict]) -> list[str]:
  """Variants in the order the suite planned (and ran) them."""
  seen = []
  for r in runs:
    if r["variant"] not in seen:
      seen.append(r["variant"])
  return seen


def aggregate(data: dict) -> dict:
  """Every figure the report shows, per direction and variant."""
  suite, runs = data["suite"], data["runs"]
  splits = ("valid",) if suite == "sensitivity" else ("valid", "test")
  out = {"suite": suite, "splits": list(splits), "directions": {}}
  for d in sorted({r["direction"] for r in runs}):
    mine = [r for r in runs if r["direction"] == d]
    done = [r for r in mine if r["results"]]
    table = {}
    for v in _order(mine):
      vr = [r for r in done if r["variant"] == v]
      row = {"seeds": sorted(r["seed"] for r in vr),
             "planned": sum(1 for r in mine if r["variant"] == v)}
      for split in splits:
        row[split] = {f"{p}/{k}": _stats([_metric(r["results"], split, p, k) for r in vr])
                      for p, keys in (("sampled", SAMPLED), ("full", FULL)) for k in keys}
        row[f"{split}/by_source_length"] = {
            b: {"HR@5": _stats([(_bucket_metric(r["results"], split, b) or {}).get(
                    "sampled", {}).get("HR@5") for r in vr]),
                "n_users": max([(_bucket_metric(r["results"], split, b) or {}).get("n_users", 0)
                                for r in vr], default=0)}
            for b in BUCKETS}
      table[v] = row
    entry = {"table": table}
    if suite in REFERENCE:
      entry["delta"] = _deltas(done, REFERENCE[suite], "test", _order(mine))
    if suite == "sensitivity":
      entry["sweeps"] = _sweeps(done)
      entry["noise"] = _binomial_se(table.get("lgcd"), done, "valid")
    entry["curves"] = _curves(mine)
    out["directions"][d] = entry
  return out


def _headline(results: dict, split: str):
  return _metric(results, split, *HEADLINE)


def reference_of(variant: str, variants, reference: str) -> str:
  """The variant a row's change is read against: `reference`, or for a removal stacked on another
  variant ("lgcd-with_pseudo-no_cyclic_batch") that variant ("lgcd-with_pseudo")."""
  stem, sep, _ = variant.rpartition("-no_")
  return stem if sep and stem != reference and stem in variants else reference


def _deltas(done: list[dict], reference: str, split: str, planned=None) -> dict:
  """Each variant's change of test HR@5 against its reference variant (`reference_of` among the
  `planned` variants): the difference of the means, and the spread of the per-seed differences
  over the seeds both have."""
  planned = list(planned or dict.fromkeys(r["variant"] for r in done))
  out = {}
  for v in planned:  # a variant without a finished run gets value and delta None
    against = reference_of(v, planned, reference)
    ref = {r["seed"]: _headline(r["results"], split) for r in done if r["variant"] == against}
    ref_stat = _stats(list(ref.values()))
    vals = {r["seed"]: _headline(r["results"], split) for r in done if r["variant"] == v}
    stat = _stats(list(vals.values()))
    paired = [vals[s] - ref[s] for s in vals if s in ref and vals[s] is not None
              and ref[s] is not None]
    delta = None
    if ref_stat and stat:
      diff = stat["mean"] - ref_stat["mean"]
      spread = _stats(paired)
      delta = {"mean": diff, "std": spread["std"] if spread else None,
               "relative": diff / ref_stat["mean"] if ref_stat["mean"] else None,
               "paired_seeds": len(paired)}
    out[v] = {"value": stat, "delta": delta, "against": against}
  return out


def _config_value(results: dict, key: str):
  node = results.get("config") or {}
  for part in key.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def _sweeps(done: list[dict]) -> dict:
  """{config key: [(value, valid HR@5 stats)]}: every LGCD run at its own config value; a swept run
  counts for its own key only, the plain run for every key."""
  out = {}
  for key in SWEEP_LABELS:
    by_value = {}
    for r in done:
      if r.get("param") not in (None, key) or r["results"].get("method") != "lgcd":
        continue
      value = _config_value(r["results"], key)
      if value is None:
        value = r.get("value")
      if value is not None:
        by_value.setdefault(value, []).append(_headline(r["results"], "valid"))
    out[key] = [(v, _stats(vals)) for v, vals in sorted(by_value.items())]
  return out


def _binomial_se(row: dict | None, done: list[dict], split: str) -> dict | None:
  """{"mean", "se", "n_users"}: the plain run's mean `split` HR@5 and one binomial standard error
  of an HR@5 at that value over the split's users, sqrt(p (1 - p) / n). With one seed per value it is
  the scale a sweep's differences must pass to mean anything (None without the plain run)."""
  stat = ((row or {}).get(split) or {}).get("/".join(HEADLINE))
  counts = [(r["results"].get("n_users") or {}).get(split) for r in done
            if isinstance(r["results"].get("n_users") or {}, dict)]
  counts = [int(c) for c in counts if isinstance(c, (int, float)) and c > 0]
  if not stat or not counts:
    return None
  p, n = stat["mean"], max(counts)
  return {"mean": p, "se": float(np.sqrt(p * (1.0 - p) / n)), "n_users": n}


def _curves(runs: list[dict]) -> dict:
  """{variant: [(step, mean valid HR@5 over the seeds logged at that step)]} for trained runs."""
  out = {}
  for v in dict.fromkeys(r["variant"] for r in runs):
    steps = {}
    for r in runs:
      if r["variant"] == v:
        for step, value in r["curve"]:
          steps.setdefault(step, []).append(value)
    if steps:
      out[v] = [(s, float(np.mean(vals))) for s, vals in sorted(steps.items())]
  return out


# --- plotting ---------------------------------------------------------------------------------------


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _bars(ax, names, stats, reference=None, reference_label="reference", labels=None):
  """Bars of mean ± std; with a reference, a dashed line and each bar's change against it
  (`labels[i]`, where given, replaces bar i's text)."""
  means = [s["mean"] if s else 0.0 for s in stats]
  errs = [(s["std"] or 0.0) if s else 0.0 for s in stats]
  colors = ["tab:blue" if s else "lightgrey" for s in stats]
  x = np.arange(len(names))
  ax.bar(x, means, yerr=errs, capsize=3, color=colors)
  for i, s in enumerate(stats):
    if s is None:
      ax.text(i, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=8)
  if reference is not None:
    ax.axhline(reference, color="tab:red", linestyle="--", linewidth=1, label=reference_label)
    for i, s in enumerate(stats):
      if s is not None and reference:
        text = (labels or {}).get(i) or f"{(s['mean'] - reference) / reference:+.0%}"
        ax.text(i, s["mean"] + ((s["std"] or 0.0)), text, ha="center", va="bottom", fontsize=7)
    ax.legend(fontsize=7, loc="lower right")
  ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)


def _legend_or_note(ax, note="no finished run", **kwargs):
  """A legend, or `note` on a panel with nothing labelled to show."""
  if ax.get_legend_handles_labels()[0]:
    ax.legend(**kwargs)
  else:
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center")


def plot_all(agg: dict, out: Path) -> dict[str, str]:
  """Writes the PNGs; returns {plot name: path relative to `out`}."""
  plt = _pyplot()
  (out / PLOTS).mkdir(parents=True, exist_ok=True)
  dirs = list(agg["directions"])
  split = agg["splits"][-1]
  files = {}

  def save(fig, name):
    fig.tight_layout()
    path = out / PLOTS / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files[name] = f"{PLOTS}/{name}.png"

  def panels(n):
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 4.2), squeeze=False)
    return fig, axes[0]

  if agg["suite"] in REFERENCE:
    fig, axes = panels(len(dirs))
    for ax, d in zip(axes, dirs):
      delta = agg["directions"][d]["delta"]
      table = agg["directions"][d]["table"]
      names = list(table)
      stats = [(delta.get(v) or {}).get("value") for v in names]
      ref = (delta.get(REFERENCE[agg["suite"]]) or {}).get("value")
      # A removal stacked on another variant: its change against that variant, as in the table.
      labels = {i: f"{e['delta']['relative']:+.0%} vs\n{e['against']}" for i, e in
                enumerate(delta.get(v) or {} for v in names)
                if e.get("delta") and e["delta"].get("relative") is not None
                and e.get("against") not in (None, REFERENCE[agg["suite"]])}
      _bars(ax, names, stats, ref["mean"] if ref else None, REFERENCE[agg["suite"]], labels)
      ax.set_title(f"{agg['suite']} {d}: test sampled HR@5 (mean ± std over seeds)")
      ax.set_ylabel("HR@5")
    save(fig, agg["suite"])

  if agg["suite"] == "sensitivity":
    keys = list(SWEEP_LABELS)
    fig, axes = panels(len(keys))
    for ax, key in zip(axes, keys):
      ticks = set()
      for d in dirs:
        points = [(v, s) for v, s in agg["directions"][d]["sweeps"].get(key, []) if s]
        if points:
          xs = [p[0] for p in points]
          line = ax.errorbar(xs, [p[1]["mean"] for p in points],
                             yerr=[p[1]["std"] or 0 for p in points], marker="o", capsize=3,
                             label=d)
          ticks.update(xs)
          noise = agg["directions"][d].get("noise")
          if noise:  # the default's value ± one binomial standard error: the scale of the noise
            ax.axhspan(noise["mean"] - noise["se"], noise["mean"] + noise["se"], alpha=0.15,
                       color=line[0].get_color(),
                       label=f"{d} default ± 1 binomial SE ({noise['n_users']} users)")
      if ticks and min(ticks) == 0 and max(ticks) > 0:
        ax.set_xscale("symlog", linthresh=min(t for t in ticks if t > 0))
      elif ticks and min(ticks) > 0 and max(ticks) / min(ticks) >= 8:
        ax.set_xscale("log")
      if ticks:  # the swept values themselves, in plain numbers
        ax.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
        ax.minorticks_off()
      ax.set_title(f"{SWEEP_LABELS[key]} ({key}): valid sampled HR@5")
      ax.set_xlabel(key)
      _legend_or_note(ax, fontsize=8)
    save(fig, "sensitivity")

  fig, axes = panels(len(dirs))
  for ax, d in zip(axes, dirs):
    entry = agg["directions"][d]
    for v, points in entry["curves"].items():
      ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=v)
    levels = {}  # one-shot methods: their valid score as a level (equal levels share a label)
    for v, row in entry["table"].items():
      if v not in entry["curves"] and row["valid"]["sampled/HR@5"]:
        levels.setdefault(round(row["valid"]["sampled/HR@5"]["mean"], 4), []).append(v)
    for level, names in levels.items():
      ax.axhline(level, linestyle=":", linewidth=1, color="grey")
      ax.text(ax.get_xlim()[0], level, f" {', '.join(names)}", fontsize=7, va="bottom",
              color="grey")
    ax.set_title(f"{d}: valid sampled HR@5 over training steps (mean over seeds)")
    ax.set_xlabel("step")
    ax.set_ylabel("valid sampled HR@5")
    _legend_or_note(ax, "no finished run of a trained method", fontsize=7)
  save(fig, "validation_curves")

  fig, axes = panels(len(dirs))
  for ax, d in zip(axes, dirs):
    table = agg["directions"][d]["table"]
    buckets = [b for b in BUCKETS if any(row[f"{split}/by_source_length"][b]["n_users"]
                                         for row in table.values())]
    names = [v for v, row in table.items()  # variants with a finished run only
             if any(row[f"{split}/by_source_length"][b]["HR@5"] for b in buckets)]
    ax.set_title(f"{d}: {split} sampled HR@5 by source-history length")
    if not names:
      _legend_or_note(ax)
      continue
    width = 0.8 / len(names)
    x = np.arange(len(buckets))
    for i, v in enumerate(names):
      stats = [table[v][f"{split}/by_source_length"][b]["HR@5"] for b in buckets]
      spread = [(s["std"] or 0) if s else 0 for s in stats]
      ax.bar(x + (i - (len(names) - 1) / 2) * width, [s["mean"] if s else 0 for s in stats], width,
             yerr=spread if any(spread) else None, capsize=2, label=v)
    counts = {b: max(table[v][f"{split}/by_source_length"][b]["n_users"] for v in names)
              for b in buckets}
    ax.set_xticks(x, [f"{b} items\n({counts[b]} users)" for b in buckets])
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    _legend_or_note(ax, fontsize=7, ncol=4, loc="upper center")
  save(fig, "by_source_length")
  return files


# --- writing ----------------------------------------------------------------------------------------


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _seeds_cell(row: dict) -> str:
  return f"{len(row['seeds'])}/{row['planned']}" if row["planned"] else str(len(row["seeds"]))


def headline(agg: dict) -> list[str]:
  """The headline table: per method, sampled HR@5 and NDCG@5 of the last split (test; valid for
  the sensitivity suite) in every direction, mean ± std over seeds (what README shows)."""
  split = agg["splits"][-1]
  dirs = list(agg["directions"])
  methods = list(dict.fromkeys(v for d in dirs for v in agg["directions"][d]["table"]))
  header = ["method", *[f"{d} {split} {m}" for d in dirs for m in ("HR@5", "NDCG@5")]]
  rows = []
  for v in methods:
    cells = []
    for d in dirs:
      row = agg["directions"][d]["table"].get(v)
      for key in ("sampled/HR@5", "sampled/NDCG@5"):
        cells.append(fmt(row[split][key]) if row else "missing")
    rows.append([v, *cells])
  return [f"## Headline: {split} sampled HR@5 and NDCG@5", ""] + _markdown_table(header, rows)


def render(data: dict, agg: dict, plots: dict[str, str]) -> str:
  suite = agg["suite"]
  lines = [f"# {suite} suite", ""]
  if data.get("config"):
    lines.append(f"Config `{data['config']}`"
                 + (f" with `{' '.join('--config.' + o for o in data['overrides'])}`"
                    if data["overrides"] else "") + ".")
  lines += [f"Runs finished: {sum(1 for r in data['runs'] if r['results'])} of "
            f"{len(data['runs'])}. Cells are mean ± std over seeds (one run: its value); "
            f"seeds = finished/planned runs. {suites.BASELINE_SEEDS.capitalize()}.", ""]
  if suite == "sensitivity":
    lines += ["Reported on **valid only**.", ""]
  lines += headline(agg) + [""]
  cols = [f"{p} {k}" for p, keys in (("sampled", SAMPLED), ("full", FULL)) for k in keys]
  for d, entry in agg["directions"].items():
    for split in agg["splits"]:
      lines += [f"## {d} {split}", ""]
      rows = [[v, _seeds_cell(row), *[fmt(row[split][f"{p}/{k}"]) for p, keys in
                                       (("sampled", SAMPLED), ("full", FULL)) for k in keys]]
              for v, row in entry["table"].items()]
      lines += _markdown_table(["method", "seeds", *cols], rows) + [""]
  if suite in REFERENCE:
    lines += [f"## {suite}: test sampled HR@5 against `{REFERENCE[suite]}`", "",
              "Change = difference of the means; its ± is the std of the per-seed differences "
              "(over the seeds both have). A removal stacked on another variant is read against "
              "that variant (the `against` column).", ""]
    for d, entry in agg["directions"].items():
      rows = []
      for v in entry["table"]:
        e = entry["delta"].get(v) or {}
        delta = e.get("delta")
        change = "missing" if delta is None else (
            fmt(delta) + (f" ({delta['relative'] * 100:+.1f} %)" if delta["relative"] is not None
                          else ""))
        rows.append([v, fmt(e.get("value")), change, e.get("against", REFERENCE[suite])])
      lines += [f"### {d}", ""] + _markdown_table(["variant", "test HR@5", "change", "against"],
                                                  rows) + [""]
    if suite in plots:
      lines += [f"![{suite}]({plots[suite]})", ""]
  if suite == "sensitivity":
    lines += ["## Sensitivity (valid sampled HR@5)", ""]
    for d, entry in agg["directions"].items():
      noise = entry.get("noise")
      if noise:
        lines += [f"{d}: one binomial standard error of a valid HR@5 of {noise['mean']:.4f} over "
                  f"{noise['n_users']} users is {noise['se']:.4f} (the shaded band in the plot): "
                  "differences between values smaller than that are within the sampling noise "
                  "of this split.", ""]
      for key, points in entry["sweeps"].items():
        rows = [[f"{v:g}" if isinstance(v, float) else str(v), fmt(s)] for v, s in points]
        lines += [f"### {d}: {SWEEP_LABELS[key]} (`{key}`)", ""]
        lines += _markdown_table([key, "valid HR@5"], rows) if rows else ["no finished run"]
        lines.append("")
    lines += [f"![sensitivity]({plots['sensitivity']})", ""]
  split = agg["splits"][-1]
  lines += [f"## {split} sampled HR@5 by source-history length", ""]
  for d, entry in agg["directions"].items():
    table = entry["table"]
    counts = {b: max((row[f"{split}/by_source_length"][b]["n_users"] for row in table.values()),
                     default=0) for b in BUCKETS}
    buckets = [b for b in BUCKETS if counts[b]]
    lines += [f"### {d} by source length", ""]
    if not buckets:
      lines += ["no finished run with by_source_length", ""]
      continue
    rows = [[v, *[fmt(row[f"{split}/by_source_length"][b]["HR@5"]) for b in buckets]]
            for v, row in table.items()]
    lines += _markdown_table(["method", *[f"{b} items ({counts[b]} users)" for b in buckets]],
                             rows) + [""]
  lines += [f"![by source length]({plots['by_source_length']})", "",
            "## Validation curves", "",
            "Valid sampled HR@5 at each evaluation of the trained runs (mean over the seeds logged "
            "at that step); dotted levels are the one-shot methods' valid scores.", "",
            f"![validation curves]({plots['validation_curves']})", ""]
  unfinished = [r for r in data["runs"] if not r["results"]]
  if unfinished:
    lines += ["## Missing runs", ""]
    rows = [[r["name"], r["state"], _last_line(r.get("error"))] for r in unfinished]
    lines += _markdown_table(["run", "state", "last error line"], rows) + [""]
  return "\n".join(lines)


def _last_line(text) -> str:
  if not text:
    return ""
  line = text.strip().splitlines()[-1] if text.strip() else ""
  return line.replace("|", "\\|")[:160]


def build(out: str | Path) -> Path:
  """Writes DIR/REPORT.md, DIR/report.json and DIR/plots/; returns the report's path."""
  out = Path(out)
  data = load_suite(out)
  if not data["runs"]:
    raise FileNotFoundError(f"{out}: no index.json and no */*/seed*/results.json: not a suite")
  agg = aggregate(data)
  plots = plot_all(agg, out)
  atomic.atomic_write_json(out / "report.json", _jsonable(agg))
  path = out / "REPORT.md"
  atomic.atomic_write_text(path, render(data, agg, plots))
  return path


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print("usage: python -m lgcd_jax.report DIR", file=sys.stderr)
    return 2
  print(f"report written to {build(argv[0])}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
