"""The benchmark runs end to end and reports what its JSON contract promises."""

import json

from configs import tiny
from lgcd_jax import bench


def test_quick_bench_reports_every_field(trained_tiny, tmp_path):
  # On a trained workdir the bench restores its best checkpoint (and reuses its prepared data).
  result = bench.run(tiny.get_config(), str(trained_tiny[0]), [64], ["float32"], 2, 2, quick=True,
                     profile_dir=str(tmp_path / "profile"))
  json.dumps(result)  # the --json output must serialise
  assert set(result) >= {"device", "backend", "devices", "config", "sampling", "train"}
  samplers = {row["sampler"] for row in result["sampling"]}
  assert samplers == {"ddim", "ddpm"}
  for row in result["sampling"]:
    assert set(row) >= {"batch_size", "sampler", "steps", "precision", "users_per_s", "compile_s",
                        "flops_per_user", "bytes_per_user", "peak_bytes", "items"}
    assert row["users_per_s"] > 0 and row["flops_per_user"] > 0
  ddpm = next(r for r in result["sampling"] if r["sampler"] == "ddpm")
  ddim = next(r for r in result["sampling"] if r["sampler"] == "ddim")
  if ddpm["steps"] > ddim["steps"]:  # more reverse steps cost more FLOPs per user
    assert ddpm["flops_per_user"] > ddim["flops_per_user"]
  assert result["train"]["batch_size"] == tiny.get_config().data.batch_size
  assert result["train"]["users_per_s"] > 0
  for row in (result["train"], result["train"]["encoder"]):  # both stages, with their FLOPs
    assert row["users_per_s"] > 0 and row["steps"] >= 1
    assert row["flops_per_user"] > 0 and row["achieved_flops_per_s"] > 0
  assert result["train"]["stage"] == "diffusion" and result["train"]["encoder"]["stage"] == "encoder"
  for row in (result["train"], result["train"]["encoder"]):  # --profile_dir: where the time went
    assert row["profile"] and {"op", "ms", "share", "count"} <= set(row["profile"][0])


def test_the_printed_report_has_a_line_per_row(trained_tiny, capsys):
  # --nosampling: the sampling rows are skipped, the catalogue row still runs at the batch size.
  result = bench.run(tiny.get_config(), str(trained_tiny[0]), [64], ["float32"], 1, 0, False,
                     catalogue=500, sampling=False)
  assert result["sampling"] == [] and len(result["catalogue"]) == 2
  assert result["catalogue"][0]["batch_size"] == 64 and result["catalogue"][0]["items"] == 500
  result["sampling"] = [dict(result["catalogue"][0], users_per_s=12345.0)]
  bench.print_result(json.loads(json.dumps(result)))  # as read back from --json output
  out = capsys.readouterr().out
  assert out.startswith("device: ") and "peak (measured" in out
  assert bench.HEADER in out and bench._format_row(result["sampling"][0]) in out
  assert out.count("catalogue 500 items, batch 64") == 2 and "train step" not in out


def test_peak_table_lookup():
  assert bench.device_peak("NVIDIA H200")["bfloat16"] > 0
  assert bench.device_peak("cpu") is None


def test_asking_for_a_missing_accelerator_fails_with_one_line():
  import jax
  import pytest
  if jax.default_backend() != "cpu":
    pytest.skip("an accelerator is visible")
  for backend, require in (("gpu", False), (None, True)):
    message = bench.require_backend(backend, require)
    assert message and "\n" not in message and message.startswith("bench:")
  assert bench.require_backend(None, False) is None
  info = bench.device_info()
  assert info["backend"] == "cpu" and info["devices"]


def test_peer_ratios_are_of_the_medians_and_of_the_best_repeats(capsys):
  from lgcd_jax import bench
  result = {"peer": {"T": 50, "batch": 1024, "items": 100, "torch": "x", "threads": 2,
                     "users_per_s": 1000.0, "best_users_per_s": 1250.0},
            "sampling": [{"batch_size": 1024, "sampler": "ddim", "steps": 10,
                          "precision": "float32", "users_per_s": 2000.0,
                          "best_users_per_s": 3000.0},
                         {"batch_size": 256, "sampler": "ddim", "steps": 10,
                          "precision": "float32", "users_per_s": 9.0, "best_users_per_s": 9.0}]}
  bench.print_peer(result)
  out = capsys.readouterr().out
  assert "1,000 users/s (best repeat 1,250)" in out
  assert "2,000 users/s = 2.00x the peer; best repeats 3,000 users/s = 2.40x" in out
  assert "9 users/s" not in out  # another batch size has no peer to compare with


def test_peer_rounds_interleave_the_row_and_the_peer_and_report_the_median_ratio(monkeypatch,
                                                                                 capsys):
  calls = []
  peer_speeds = iter([1000.0, 500.0, 800.0])

  def fake_peer(python, result, batch_size, repeats):
    calls.append("peer")
    return {"users_per_s": next(peer_speeds)}

  def timer(n):  # 1024 users in 0.25 s: 4,096 users/s
    calls.append(f"row x{n}")
    return [0.25] * n
  monkeypatch.setattr(bench, "run_peer", fake_peer)
  timers = {(1024, "ddim", 10, "float32"): timer, (256, "ddim", 10, "float32"): timer}
  rounds = bench.peer_rounds("python", {}, timers, 1024, 3, 3)
  assert calls == ["row x3", "peer"] * 3  # the other batch size is not timed again
  assert [r["ratio"]["ddim-10 float32"] for r in rounds] == [4.096, 8.192, 5.12]
  result = {"peer": {"T": 50, "batch": 1024, "items": 100, "torch": "x", "threads": 2,
                     "users_per_s": 1000.0}, "sampling": [], "peer_rounds": rounds}
  bench.print_peer(result)
  assert "ddim-10 float32 / peer median 5.12x (range 4.10-8.19x)" in capsys.readouterr().out
