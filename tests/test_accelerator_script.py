"""benchmarks/accelerator.sh (the prepared device check) and its summary of the bench's JSON."""

import importlib.util
import json
import subprocess
from pathlib import Path

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


def test_summary_prints_every_row_and_skips_a_cut_file(tmp_path, capsys):
  result = {
      "device": "1 x NVIDIA H200 (gpu)",
      "sampling": [{"batch_size": 4096, "sampler": "ddim", "steps": 10, "precision": "bfloat16",
                    "users_per_s": 1234567.0, "best_users_per_s": 1300000.0,
                    "flops_per_user": 1.69e7, "peak_fraction": 0.031, "peak_bytes": 3 * 2**20,
                    "compile_s": 12.5}],
      "catalogue": [{"items": 1000000, "batch_size": 1024, "topk_chunk": 2048,
                     "median_s": 0.5, "users_per_s": 2048.0, "peak_bytes": 291 * 2**20},
                    {"items": 1000000, "batch_size": 1024, "topk_chunk": None,
                     "median_s": float("nan"), "peak_bytes": 5000 * 2**20}],
      "train": {"stage": "diffusion", "batch_size": 256, "users_per_s": 9000.0,
                "achieved_flops_per_s": 2e12, "peak_fraction": 0.04,
                "encoder": {"stage": "encoder", "batch_size": 256, "users_per_s": 8000.0}},
  }
  good = tmp_path / "sampling.json"
  good.write_text("some log line\n" + json.dumps(result) + "\n")
  cut = tmp_path / "scale.json"
  cut.write_text('{"device": "1 x NVIDIA H200 (gpu)", "sampl')
  assert _summarise().main([str(good), str(cut), str(tmp_path / "missing.json")]) == 0
  out = capsys.readouterr().out
  assert "sampling batch 4096 ddim-10 bfloat16: 1,234,567 users/s (best 1,300,000)" in out
  assert "3.1% of peak" in out and "peak memory 3 MiB" in out
  assert "catalogue 1,000,000 items, batch 1024, top-k chunk 2048: 2,048 users/s" in out
  assert "top-k chunk full: compiled only, peak memory 5,000 MiB" in out
  assert "train step, encoder stage, batch 256: 8,000 users/s, - FLOP/s" in out
  assert "train step, diffusion stage, batch 256: 9,000 users/s, 2.000e+12 FLOP/s (4.0% of peak)" in out
  assert f"{cut}: no JSON result" in out
  assert "missing.json: not read" in out
