"""Two local processes (CPU, collectives over loopback) train together like one process with 2 devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--config=configs/tiny.py", "--config.train.encoder_steps=4", "--config.train.steps=6",
        "--config.train.eval_every=3", "--config.train.log_every=1",
        "--config.train.checkpoint_every=3"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["kind"] == "train"]
  return [r["loss"] if r["stage"] == "diffusion"
          else r["encoder_loss/src"] + r["encoder_loss/tgt"] for r in train]


def test_two_processes_match_one_process_with_two_devices(tmp_path):
  base = {**os.environ, "JAX_PLATFORMS": "cpu"}
  single = tmp_path / "single"
  subprocess.run([sys.executable, "main.py", f"--workdir={single}", *ARGS], cwd=REPO, check=True,
                 capture_output=True, timeout=600,
                 env={**base, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  multi = tmp_path / "multi"
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "main.py", f"--workdir={multi}", *ARGS], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**base, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                 "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)})
           for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=2e-4, atol=2e-5)
  a = json.loads((single / "results.json").read_text())
  b = json.loads((multi / "results.json").read_text())
  assert a["steps_run"] == b["steps_run"] == 10
  for proto in ("sampled", "full"):
    for k, v in a["test"][proto].items():
      assert abs(v - b["test"][proto][k]) < 1e-4
  # One checkpoint per step, written once (not once per process).
  assert sorted(p.name for p in (multi / "checkpoints" / "latest").iterdir()
                if p.name.isdigit()) == ["10"]
