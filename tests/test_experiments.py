"""The suite runner: the runs each suite makes, and a real tiny suite that fails, is killed and resumes."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


def test_suites_make_the_papers_runs():
  from configs import food_kitchen
  from lgcd_jax import suites
  config = food_kitchen.get_config()
  main = suites.plan("main", ["A2B", "B2A"], [0, 1, 2], config)
  # Baselines once per direction (seed 0), trained methods once per seed.
  assert len(main) == 2 * (len(suites.BASELINES) + 3 * len(suites.TRAINED))
  assert {s.variant for s in main} == set(suites.BASELINES + suites.TRAINED)
  assert main[0].name == "A2B/popularity/seed0"
  ablation = suites.plan("ablation", ["A2B"], [0], config)
  no_moe = next(s for s in ablation if s.variant == "lgcd-no_moe")
  assert no_moe.name == "A2B/lgcd-no_moe/seed0"
  assert no_moe.overrides == ("method=lgcd", "direction=A2B", "seed=0", "model.use_moe=False")
  # Its pseudo pairs are off: the suite measures adding them, not removing what is not there.
  assert not config.model.use_pseudo
  variants = {s.variant: s.overrides[3:] for s in ablation}
  assert "lgcd-no_pseudo" not in variants and "lgcd-no_cyclic_batch" not in variants
  assert variants["lgcd-with_pseudo"] == ("model.use_pseudo=True",)
  assert variants["lgcd-with_pseudo-no_cyclic_batch"] == ("model.use_pseudo=True",
                                                          "model.cyclic_batch=False")
  with_pseudo = food_kitchen.get_config().unlock()
  with_pseudo.model.use_pseudo = True
  assert ([s.variant for s in suites.plan("ablation", ["A2B"], [0], with_pseudo)]
          == [v for v, _ in suites.ABLATIONS])
  assert len(suites.plan("conditioning", ["A2B"], [0, 1], config)) == 2 * 5
  sens = suites.plan("sensitivity", ["A2B"], [0], config, {"T": [20, 100, 200]})
  names = [s.variant for s in sens]
  # A swept value equal to the config's own is the shared plain run, listed once.
  assert names.count("lgcd") == 1 and "lgcd-T100" not in names and "lgcd-nK20" not in names
  t20 = next(s for s in sens if s.variant == "lgcd-T20")
  assert t20.param == "model.diffusion_steps" and t20.value == 20
  assert "model.guess_start_step=20" in t20.overrides  # capped at T
  t200 = next(s for s in sens if s.variant == "lgcd-T200")
  assert f"model.guess_start_step={config.model.guess_start_step}" in t200.overrides
  lam = next(s for s in sens if s.variant == "lgcd-lambda0.01")
  assert "train.alignment_weight=0.01" in lam.overrides
  # Every override of every suite names a field of the config (a typo would fail each run).
  for suite in suites.SUITES:
    suites.check_overrides(config, suites.plan(suite, ["A2B", "B2A"], [0], config))
  bad = suites.RunSpec("A2B/x/seed0", "x", "lgcd", "A2B", 0, ("model.use_moee=False",))
  try:
    suites.check_overrides(config, [bad])
    raise AssertionError("an unknown field should be refused")
  except KeyError as e:
    assert "model.use_moee" in str(e)


def test_dry_run_lists_runs_with_the_suites_overrides(tmp_path):
  out = subprocess.run([sys.executable, "-m", "lgcd_jax.experiments", "--suite=ablation",
                        "--config=configs/tiny.py", f"--out={tmp_path}", "--directions=B2A",
                        "--seeds=3", "--dry_run", "--config.train.steps=7"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert "7 runs" in lines[-1]
  no_guesser = next(line for line in lines if "B2A/lgcd-no_guesser/seed3" in line)
  assert ("--config.train.steps=7 --config.method=lgcd --config.direction=B2A --config.seed=3 "
          "--config.model.use_guesser=False") in no_guesser
  assert not (tmp_path / "index.json").exists()  # a dry run writes nothing


def test_a_suite_records_a_failure_goes_on_and_resumes(tmp_path, monkeypatch):
  from lgcd_jax import experiments, suites
  monkeypatch.chdir(REPO)  # the config path is relative to the repository, as on the command line
  out = tmp_path / "suite"
  pop = suites._spec("popularity", "popularity", "A2B", 0)
  broken = suites._spec("broken", "no_such_method", "A2B", 0)
  cooc = suites._spec("cooccurrence", "cooccurrence", "A2B", 0)
  lines = []
  counts = experiments.run_suite([broken, pop], out, "configs/tiny.py", ["train.steps=5"],
                                 {"suite": "test"}, echo=lines.append)
  assert counts == {"done": 1, "failed": 1, "skipped": 0}
  index = json.loads((out / "index.json").read_text())
  runs = {r["name"]: r for r in index["runs"]}
  assert runs[broken.name]["state"] == "failed" and runs[broken.name]["rc"] != 0
  assert "no_such_method" in runs[broken.name]["error"]  # the log's tail says why
  assert runs[pop.name]["state"] == "done" and runs[pop.name]["wall_s"] > 0
  assert runs[pop.name]["overrides"] == list(pop.overrides)
  assert index["overrides"] == ["train.steps=5"]
  log = (out / pop.name / "run.log").read_text()
  assert "--config.train.steps=5 --config.method=popularity" in log
  assert any(line.startswith("[1/2] FAILED A2B/broken/seed0") for line in lines)
  assert any(line.startswith("[2/2] done A2B/popularity/seed0") for line in lines)

  # A suite killed during co-occurrence: its record says running, its workdir has no results.json.
  index["runs"].append({**cooc.to_json(), "workdir": cooc.name, "state": "running",
                        "attempts": 1, "error": None, "wall_s": None, "rc": None})
  (out / "index.json").write_text(json.dumps(index))
  (out / cooc.name).mkdir(parents=True)
  pop_mtime = (out / pop.name / "results.json").stat().st_mtime_ns
  lines.clear()
  counts = experiments.run_suite([pop, cooc], out, "configs/tiny.py", ["train.steps=5"],
                                 {"suite": "test"}, echo=lines.append)
  assert counts == {"done": 1, "failed": 0, "skipped": 1}
  assert lines[0] == "[1/2] skip A2B/popularity/seed0 (results.json present)"
  assert (out / pop.name / "results.json").stat().st_mtime_ns == pop_mtime
  runs = {r["name"]: r for r in json.loads((out / "index.json").read_text())["runs"]}
  assert runs[cooc.name]["state"] == "done" and runs[cooc.name]["attempts"] == 2
  assert json.loads((out / cooc.name / "results.json").read_text())["method"] == "cooccurrence"
  assert runs[broken.name]["state"] == "failed"  # runs outside this call's list are kept as they are

  # Resuming with other overrides is refused (main.py would refuse the checkpoints anyway).
  try:
    experiments.run_suite([pop], out, "configs/tiny.py", ["train.steps=6"], {"suite": "test"},
                          echo=lines.append)
    raise AssertionError("a resume with other overrides should be refused")
  except ValueError as e:
    assert "overrides" in str(e)


def test_jobs_run_concurrently_and_record_every_run(tmp_path, monkeypatch):
  """--jobs=2: two runs at a time (their run windows overlap), each recorded as with one job."""
  from lgcd_jax import experiments, suites
  monkeypatch.chdir(REPO)
  out = tmp_path / "suite"
  specs = [suites._spec(m, m, d, 0) for m in ("popularity", "cooccurrence") for d in ("A2B", "B2A")]
  lines = []
  counts = experiments.run_suite(specs, out, "configs/tiny.py", ["train.steps=5"],
                                 {"suite": "test"}, echo=lines.append, jobs=2)
  assert counts == {"done": 4, "failed": 0, "skipped": 0}
  runs = {r["name"]: r for r in json.loads((out / "index.json").read_text())["runs"]}
  assert all(runs[s.name]["state"] == "done" for s in specs)
  assert [l.split()[1] for l in lines[:2]] == ["start", "start"]  # two started before any ended
  with pytest.raises(ValueError, match="jobs"):
    experiments.run_suite(specs, out, "configs/tiny.py", ["train.steps=5"], {"suite": "test"},
                          jobs=0)


def test_a_run_log_names_no_directory_of_the_machine():
  """run.log's command line shows `python` and repository-relative paths (logs are committed)."""
  from lgcd_jax import experiments
  root = experiments.MAIN_PY.parent
  cmd = ["/opt/venv/bin/python", str(experiments.MAIN_PY), f"--config={root / 'configs/tiny.py'}",
         "--config.seed=1", f"--workdir={root / 'results/x/A2B/lgcd/seed0'}"]
  assert experiments._shown(cmd) == ("python main.py --config=configs/tiny.py --config.seed=1 "
                                     "--workdir=results/x/A2B/lgcd/seed0")


def test_a_finished_run_of_an_edited_config_is_stale(tmp_path, monkeypatch):
  """After the config file changes, a resume names the finished runs it made stale, and
  rerun_stale moves them aside and runs them again; a change a baseline does not read is not one."""
  from lgcd_jax import experiments, suites
  monkeypatch.chdir(REPO)
  cfg = tmp_path / "cfg.py"
  source = ("from configs import tiny\n\n\ndef get_config():\n  c = tiny.get_config()\n"
            "  c.baselines.cooc_normalize = {norm}\n  c.model.d = {d}\n  return c\n")
  cfg.write_text(source.format(norm=False, d=16))
  out = tmp_path / "suite"
  cooc = suites._spec("cooccurrence", "cooccurrence", "A2B", 0)
  lines = []
  counts = experiments.run_suite([cooc], out, str(cfg), [], {"suite": "test"}, echo=lines.append)
  assert counts["done"] == 1
  first = json.loads((out / cooc.name / "results.json").read_text())

  cfg.write_text(source.format(norm=False, d=24))  # a model field: co-occurrence does not read it
  assert experiments.stale_runs([cooc], out, str(cfg), []) == {}
  counts = experiments.run_suite([cooc], out, str(cfg), [], {"suite": "test"}, echo=lines.append)
  assert counts == {"done": 0, "failed": 0, "skipped": 1}

  cfg.write_text(source.format(norm=True, d=24))
  stale = experiments.stale_runs([cooc], out, str(cfg), [])
  assert stale == {cooc.name: {"baselines.cooc_normalize": (False, True)}}
  with pytest.raises(experiments.SuiteError, match="cooc_normalize"):
    experiments.run_suite([cooc], out, str(cfg), [], {"suite": "test"}, echo=lines.append)
  assert json.loads((out / cooc.name / "results.json").read_text()) == first  # left as it was
  # An override that restores the old value makes the run current again.
  assert experiments.stale_runs([cooc], out, str(cfg), ["baselines.cooc_normalize=False"]) == {}

  counts = experiments.run_suite([cooc], out, str(cfg), [], {"suite": "test"}, echo=lines.append,
                                 rerun_stale=True)
  assert counts == {"done": 1, "failed": 0, "skipped": 0}
  assert json.loads((out / "stale" / cooc.name / "results.json").read_text()) == first
  now = json.loads((out / cooc.name / "results.json").read_text())
  assert now["config"]["baselines"]["cooc_normalize"] is True
  assert experiments.stale_runs([cooc], out, str(cfg), []) == {}


def test_overrides_are_read_as_their_fields_type():
  import ml_collections
  from lgcd_jax import config_check
  c = ml_collections.ConfigDict({"a": {"flag": True, "n": 1, "x": 0.5, "s": "v"}})
  for o in ("a.flag=False", "a.n=3", "a.x=2", "a.s=w"):
    config_check.apply_override(c, o)
  assert c.to_dict() == {"a": {"flag": False, "n": 3, "x": 2.0, "s": "w"}}
  for bad in ("a.flag=maybe", "a.n=1.5", "a.n"):
    with pytest.raises(ValueError, match="a.n|a.flag"):
      config_check.apply_override(c, bad)


def test_a_field_older_results_lack_counts_as_its_default():
  from configs import default
  from lgcd_jax import config_check
  config = default.get_base_config()
  old = config.to_dict()
  del old["data"]["real_pairs"]  # written before the field existed: the default, "whole"
  assert config_check.result_differences(old, config.to_dict()) == {}
  config.data.real_pairs = "next"
  assert config_check.result_differences(old, config.to_dict()) == {
      "data.real_pairs": ("whole", "next")}


def test_a_suites_runs_share_a_compilation_cache(tmp_path, monkeypatch):
  """Every run gets JAX_COMPILATION_CACHE_DIR = DIR/.jax_cache unless the environment sets one."""
  from lgcd_jax import experiments, suites
  monkeypatch.chdir(REPO)
  fake = tmp_path / "fake_python"  # stands in for the interpreter: records the variable, fails
  fake.write_text("#!/bin/sh\necho \"$JAX_COMPILATION_CACHE_DIR\" >> \"$SEEN\"\nexit 3\n")
  fake.chmod(0o755)
  seen = tmp_path / "seen.txt"
  monkeypatch.setenv("SEEN", str(seen))
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  out = tmp_path / "suite"
  spec = suites._spec("popularity", "popularity", "A2B", 0)
  counts = experiments.run_suite([spec], out, "configs/tiny.py", [], {"suite": "test"},
                                 echo=lambda _: None, python=str(fake))
  assert counts["failed"] == 1
  assert seen.read_text().split() == [str((out / experiments.COMPILE_CACHE_DIR).resolve())]
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
  experiments.run_suite([spec], out, "configs/tiny.py", [], {"suite": "test"},
                        echo=lambda _: None, python=str(fake))
  assert seen.read_text().split()[-1] == str(tmp_path / "mine")


def test_a_run_another_suite_finished_with_the_same_config_is_reused(tmp_path, monkeypatch):
  from lgcd_jax import experiments, suites
  monkeypatch.chdir(REPO)
  other, out = tmp_path / "ablation", tmp_path / "conditioning"
  pop = suites._spec("popularity", "popularity", "A2B", 0)
  assert experiments.run_suite([pop], other, "configs/tiny.py", ["train.steps=5"],
                               {"suite": "a"}, echo=lambda _: None)["done"] == 1
  fake = tmp_path / "fake_python"  # any run actually started fails
  fake.write_text("#!/bin/sh\nexit 3\n")
  fake.chmod(0o755)
  # The same config under another variant name is reused; another config (a seed) is not.
  same = suites._spec("pop-again", "popularity", "A2B", 0)
  changed = suites._spec("pop-cooc", "popularity", "A2B", 0, ("baselines.cooc_normalize=True",))
  differs = suites._spec("cooccurrence", "cooccurrence", "A2B", 0)
  lines = []
  counts = experiments.run_suite([same, differs], out, "configs/tiny.py", ["train.steps=5"],
                                 {"suite": "c"}, echo=lines.append, python=str(fake),
                                 reuse=[other])
  assert counts == {"done": 0, "failed": 1, "skipped": 1}
  assert (json.loads((out / same.name / "results.json").read_text())
          == json.loads((other / pop.name / "results.json").read_text()))
  index = json.loads((out / "index.json").read_text())
  rec = {r["name"]: r for r in index["runs"]}
  assert rec[same.name]["state"] == "done" and rec[differs.name]["state"] == "failed"
  assert not rec[same.name]["reused_from"].startswith("/")
  assert "reused" in (out / same.name / "run.log").read_text().splitlines()[0]
  # A baseline reads none of the model fields, but it does read baselines.*: not the same config.
  assert experiments.reuse_runs([changed], out, "configs/tiny.py", ["train.steps=5"], [other]) == {}
  with pytest.raises(experiments.SuiteError, match="--reuse"):
    experiments.reuse_runs([same], out, "configs/tiny.py", [], [tmp_path / "nope"])
