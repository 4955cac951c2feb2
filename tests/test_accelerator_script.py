"""benchmarks/accelerator.sh (the prepared device check) and its summary of the bench's JSON."""

import importlib.util
import json
import subprocess
from pathlib import Path

from lgcd_jax import bench

REPO = Path(__file__).resolve().parents[1]


def _summarise():
  spec = importlib.util.spec_from_file_location("summarise_bench",
                                                REPO / "benchmarks" / "summarise_bench.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_script_parses_and_names_its_verbs():
  script = REPO / "benchmarks" / "accelerator.sh"
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
  assert out.returncode == 2 and "prepare|run" in out.stderr


def test_summary_prints_the_bench_report_and_skips_a_bad_file(tmp_path, capsys):
  row = {"batch_size": 4096, "sampler": "ddim", "steps": 10, "precision": "bfloat16",
         "users_per_s": 1234567.0, "compile_s": 12.5, "median_s": 0.0033, "spread_s": 0.0001,
         "flops_per_user": 1.69e7, "bytes_per_user": 2.0e5, "achieved_flops_per_s": 2.1e13,
         "bound": "memory", "micro_batch": None}
  result = {
      "device": "1 x NVIDIA H200 (gpu)", "backend": "gpu", "devices": ["cuda:0"], "peak": None,
      "sampling": [row],
      "catalogue": [{"items": 1000000, "batch_size": 1024, "sampler": "ddim", "steps": 10,
                     "topk_chunk": 2048, "median_s": 0.5, "users_per_s": 2048.0,
                     "flops_per_user": 3e8, "peak_bytes": 291 * 2**20},
                    {"items": 1000000, "batch_size": 1024, "sampler": "ddim", "steps": 10,
                     "topk_chunk": None, "median_s": float("nan"), "flops_per_user": 3e8,
                     "peak_bytes": 5000 * 2**20}],
      "train": {"stage": "diffusion", "batch_size": 256, "users_per_s": 9000.0,
                "flops_per_user": 1e8, "achieved_flops_per_s": 9e11, "peak_fraction": 0.04,
                "compile_s": 30.0,
                "encoder": {"stage": "encoder", "batch_size": 256, "users_per_s": 8000.0,
                            "compile_s": 20.0}},
  }
  good = tmp_path / "sampling.json"
  good.write_text("some log line\n" + json.dumps(result) + "\n")
  cut = tmp_path / "scale.json"
  cut.write_text('{"device": "1 x NVIDIA H200 (gpu)", "sampl')
  other = tmp_path / "other.json"
  other.write_text('{"device": "x", "sampling": [{"batch_size": 1}]}\n')
  paths = [good, cut, tmp_path / "missing.json", other]
  assert _summarise().main([str(p) for p in paths]) == 0
  out = capsys.readouterr().out
  # The bench's own table row and lines (bench.print_result), not a second formatter.
  assert bench._format_row(row) in out
  assert "device: 1 x NVIDIA H200 (gpu); backend gpu, devices cuda:0" in out
  assert "catalogue 1,000,000 items, batch 1024, ddim-10, top-k chunk 2048: 2,048 users/s" in out
  assert "top-k chunk full: compiled only, 3.000e+08 FLOPs/user, peak 5,000 MiB" in out
  assert "train step, encoder stage: batch 256, 8,000 users/s (compile 20.0s)" in out
  assert ("train step, diffusion stage: batch 256, 9,000 users/s, 1.000e+08 FLOPs/user, "
          "9.000e+11 FLOP/s (4% of peak)") in out
  assert f"{cut}: no JSON result" in out
  assert "missing.json: not read" in out
  assert f"{other}: not a bench result of this version (KeyError" in out
