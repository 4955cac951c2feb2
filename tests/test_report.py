"""The suite report: its numbers are the runs' results.json, partial suites work, the PNGs are made."""

import json

import numpy as np
import pytest

from lgcd_jax import report
from lgcd_jax import results as results_lib
from lgcd_jax import suites
from lgcd_jax.data import atomic

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def _scores(rng, n_users):
  by_len = {b: {"n_users": n, "sampled": {k: float(rng.uniform()) for k in METRICS},
                "full": {k: float(rng.uniform()) for k in METRICS}}
            for b, n in (("2-3", 5), ("4-7", 3), ("8+", 2))}
  return {"sampled": {k: float(rng.uniform()) for k in METRICS},
          "full": {k: float(rng.uniform()) for k in METRICS},
          "n_users": n_users, "by_source_length": by_len}


def _fake_run(out, spec, rng, state="done", curve_steps=(5, 10), config=None):
  """A run's workdir as main.py leaves it: results.json and metrics.jsonl (or none, unfinished)."""
  workdir = out / spec.name
  workdir.mkdir(parents=True)
  rec = {**spec.to_json(), "workdir": spec.name, "state": state, "attempts": 1,
         "error": "Traceback ...\nValueError: boom" if state == "failed" else None}
  if state != "done":
    return rec
  res = results_lib.make_results(spec.method, spec.direction, "fake", _scores(rng, 10),
                                 _scores(rng, 10), config=config or {})
  atomic.atomic_write_json(workdir / "results.json", res)
  with open(workdir / "metrics.jsonl", "w") as f:
    for step in curve_steps:
      f.write(json.dumps({"kind": "eval", "step": step, "split": "valid",
                          "sampled": {"HR@5": float(rng.uniform())}}) + "\n")
  return rec


def _suite(out, suite, recs):
  atomic.atomic_write_json(out / "index.json", {"suite": suite, "config": "configs/tiny.py",
                                                "overrides": ["train.steps=5"], "runs": recs})


def _cell(values):
  values = [float(v) for v in values]
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _row(md, section, name):
  """The cells of `name`'s row in the first table after the heading `section`."""
  lines = md.splitlines()
  start = lines.index(section)
  for line in lines[start + 1:]:
    if line.startswith("#"):
      break
    if line.startswith(f"| {name} |"):
      return [c.strip() for c in line.strip("|").split("|")]
  raise AssertionError(f"no row {name!r} under {section!r}")


def _results(out, name):
  return json.loads((out / name / "results.json").read_text())


def test_main_report_numbers_are_the_runs_results(tmp_path):
  rng = np.random.default_rng(0)
  specs = [suites._spec("popularity", "popularity", "A2B", 0),
           suites._spec("mf", "mf", "A2B", 0),
           suites._spec("lgcd", "lgcd", "A2B", 0), suites._spec("lgcd", "lgcd", "A2B", 1),
           suites._spec("lgcd", "lgcd", "A2B", 2),
           suites._spec("emcdr", "emcdr", "A2B", 0), suites._spec("dmcdr", "dmcdr", "A2B", 0),
           suites._spec("mf", "mf", "B2A", 0)]
  states = ["done"] * 5 + ["running", "failed", "done"]
  _suite(tmp_path, "main", [_fake_run(tmp_path, s, rng, st) for s, st in zip(specs, states)])
  path = report.build(tmp_path)
  md = path.read_text()
  lgcd = [_results(tmp_path, f"A2B/lgcd/seed{s}") for s in range(3)]
  mf = _results(tmp_path, "A2B/mf/seed0")
  for split in ("valid", "test"):
    row = _row(md, f"## A2B {split}", "lgcd")
    assert row[1] == "3/3"
    cells = dict(zip([f"sampled {k}" for k in report.SAMPLED] + [f"full {k}" for k in report.FULL],
                     row[2:]))
    for k in report.SAMPLED:
      assert cells[f"sampled {k}"] == _cell([r[split]["sampled"][k] for r in lgcd])
    for k in report.FULL:
      assert cells[f"full {k}"] == _cell([r[split]["full"][k] for r in lgcd])
    mf_row = _row(md, f"## A2B {split}", "mf")
    assert mf_row[3] == f"{mf[split]['sampled']['HR@5']:.4f}"  # one run: its value, no spread
  # The headline (README's table): test HR@5 and NDCG@5 per direction, the same cells.
  head_row = _row(md, "## Headline: test sampled HR@5 and NDCG@5", "lgcd")
  assert head_row[1:3] == [_cell([r["test"]["sampled"][k] for r in lgcd]) for k in ("HR@5", "NDCG@5")]
  assert head_row[3:] == ["missing", "missing"]  # no B2A lgcd run
  mf_b2a = _results(tmp_path, "B2A/mf/seed0")["test"]["sampled"]["HR@5"]
  assert _row(md, "## Headline: test sampled HR@5 and NDCG@5", "mf")[3] == f"{mf_b2a:.4f}"
  # Unfinished runs are shown as missing and listed with their state.
  assert _row(md, "## A2B test", "emcdr")[2:] == ["missing"] * 8
  assert _row(md, "## Missing runs", "A2B/emcdr/seed0")[1] == "running"
  assert _row(md, "## Missing runs", "A2B/dmcdr/seed0")[1:] == ["failed", "ValueError: boom"]
  # By source-history length (test): the buckets' HR@5 and user counts.
  head = next(line for line in md.splitlines() if line.startswith("| method | 2-3 items"))
  assert "2-3 items (5 users)" in head and "8+ items (2 users)" in head and "0-1" not in head
  by_len = _row(md, "### A2B by source length", "lgcd")
  assert by_len[1] == _cell([r["by_source_length"]["test"]["2-3"]["sampled"]["HR@5"] for r in lgcd])
  # report.json carries the same figures; the validation curve averages the seeds at each step.
  agg = json.loads((tmp_path / "report.json").read_text())
  stat = agg["directions"]["A2B"]["table"]["lgcd"]["test"]["sampled/HR@5"]
  np.testing.assert_allclose(stat["mean"], np.mean([r["test"]["sampled"]["HR@5"] for r in lgcd]))
  curve = agg["directions"]["A2B"]["curves"]["lgcd"]
  assert [p[0] for p in curve] == [5, 10]
  for name in ("validation_curves", "by_source_length"):
    png = tmp_path / "plots" / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plots/{name}.png" in md


def test_ablation_report_changes_against_full_lgcd(tmp_path):
  rng = np.random.default_rng(1)
  specs = [suites._spec(v, "lgcd", "A2B", s, o) for v, o in suites.ABLATIONS[:3] for s in (0, 1)]
  recs = [_fake_run(tmp_path, spec, rng, "pending" if spec.variant == "lgcd-no_pseudo" else "done")
          for spec in specs]
  _suite(tmp_path, "ablation", recs)
  md = report.build(tmp_path).read_text()
  full = [_results(tmp_path, f"A2B/lgcd/seed{s}")["test"]["sampled"]["HR@5"] for s in (0, 1)]
  no_diff = [_results(tmp_path, f"A2B/lgcd-no_diffusion/seed{s}")["test"]["sampled"]["HR@5"]
             for s in (0, 1)]
  row = _row(md, "### A2B", "lgcd-no_diffusion")
  diff = np.mean(no_diff) - np.mean(full)
  spread = np.std(np.subtract(no_diff, full), ddof=1)
  assert row[1] == _cell(no_diff)
  assert row[2] == f"{diff:.4f} ± {spread:.4f} ({diff / np.mean(full) * 100:+.1f} %)"
  assert row[3] == "lgcd"
  assert _row(md, "### A2B", "lgcd-no_pseudo")[1:] == ["missing", "missing", "lgcd"]
  assert (tmp_path / "plots" / "ablation.png").exists() and "plots/ablation.png" in md


def test_a_removal_stacked_on_a_variant_is_read_against_it(tmp_path):
  rng = np.random.default_rng(3)
  variants = [(v, o) for v, o in suites.ablations({"model": {"use_pseudo": False}})
              if v in ("lgcd", "lgcd-with_pseudo", "lgcd-with_pseudo-no_cyclic_batch")]
  assert len(variants) == 3
  specs = [suites._spec(v, "lgcd", "A2B", s, o) for v, o in variants for s in (0, 1)]
  _suite(tmp_path, "ablation", [_fake_run(tmp_path, spec, rng) for spec in specs])
  md = report.build(tmp_path).read_text()
  hr = lambda v: [_results(tmp_path, f"A2B/{v}/seed{s}")["test"]["sampled"]["HR@5"] for s in (0, 1)]
  stacked = _row(md, "### A2B", "lgcd-with_pseudo-no_cyclic_batch")
  diff = np.mean(hr("lgcd-with_pseudo-no_cyclic_batch")) - np.mean(hr("lgcd-with_pseudo"))
  assert stacked[2].startswith(f"{diff:.4f} ± ") and stacked[3] == "lgcd-with_pseudo"
  added = _row(md, "### A2B", "lgcd-with_pseudo")
  diff = np.mean(hr("lgcd-with_pseudo")) - np.mean(hr("lgcd"))
  assert added[2].startswith(f"{diff:.4f} ± ") and added[3] == "lgcd"
  assert report.reference_of("lgcd-with_pseudo-no_cyclic_batch", ["lgcd"], "lgcd") == "lgcd"


def test_sensitivity_report_is_valid_only_and_reads_each_runs_config(tmp_path):
  rng = np.random.default_rng(2)
  base = {"data": {"clue_len": 20}, "model": {"diffusion_steps": 100},
          "train": {"alignment_weight": 0.1}}
  recs = []
  for s in (0, 1):
    recs.append(_fake_run(tmp_path, suites._spec("lgcd", "lgcd", "A2B", s), rng, config=base))
    for nk in (5, 40):
      cfg = {**base, "data": {"clue_len": nk}}
      recs.append(_fake_run(tmp_path, suites._spec(f"lgcd-nK{nk}", "lgcd", "A2B", s,
                                                   (f"data.clue_len={nk}",), "data.clue_len", nk),
                            rng, config=cfg))
  _suite(tmp_path, "sensitivity", recs)
  md = report.build(tmp_path).read_text()
  assert "## A2B test" not in md and "## A2B valid" in md
  section = "### A2B: nK (`data.clue_len`)"
  for nk, variant in ((5, "lgcd-nK5"), (20, "lgcd"), (40, "lgcd-nK40")):
    vals = [_results(tmp_path, f"A2B/{variant}/seed{s}")["valid"]["sampled"]["HR@5"] for s in (0, 1)]
    assert _row(md, section, str(nk))[1] == _cell(vals)
  # The plain run is every sweep's point at the config's own value.
  assert _row(md, "### A2B: T (`model.diffusion_steps`)", "100")[1] == _cell(
      [_results(tmp_path, f"A2B/lgcd/seed{s}")["valid"]["sampled"]["HR@5"] for s in (0, 1)])
  assert (tmp_path / "plots" / "sensitivity.png").exists()
  # The noise scale: one binomial SE of the plain run's mean valid HR@5 over the 10 valid users.
  p = np.mean([_results(tmp_path, f"A2B/lgcd/seed{s}")["valid"]["sampled"]["HR@5"] for s in (0, 1)])
  assert (f"A2B: one binomial standard error of a valid HR@5 of {p:.4f} over 10 users is "
          f"{np.sqrt(p * (1 - p) / 10):.4f}") in md
  # Without the index, the swept key comes from the variant's name: the same tables.
  (tmp_path / "index.json").unlink()
  sweeps = lambda text: text.split("## Sensitivity")[1].split("## valid sampled HR@5 by")[0]
  assert sweeps(report.build(tmp_path).read_text()) == sweeps(md)


def test_a_directory_without_an_index_is_read_from_its_workdirs(tmp_path):
  rng = np.random.default_rng(3)
  _fake_run(tmp_path, suites._spec("popularity", "popularity", "B2A", 0), rng)
  md = report.build(tmp_path).read_text()
  pop = _results(tmp_path, "B2A/popularity/seed0")
  assert _row(md, "## B2A test", "popularity")[3] == f"{pop['test']['sampled']['HR@5']:.4f}"


def test_an_empty_directory_is_not_a_suite(tmp_path):
  with pytest.raises(FileNotFoundError):
    report.build(tmp_path)
