"""Sampling and training throughput: `python -m lgcd_jax.bench --config=configs/X.py [--json]`.

Sampling = condition encoding + the reverse chain + scoring every target item + top-10, one compiled
function, over batch sizes, samplers (DDPM over T steps, DDIM over S) and precisions. For each setting it
reports compile time apart from the steady state (warm-up, then `--repeats` timed calls: median and
spread), and the analytic floor from XLA's cost analysis: FLOPs and bytes accessed per user, the achieved
FLOP/s, and against the device's peak where known, whether the setting is compute- or memory-bound
(arithmetic intensity vs the device's ridge point; on a device without data-sheet figures, such as a CPU, the peak is measured with a large matmul and a large array copy). `--json` prints one JSON object:

  {"device", "config", "sampling": [{"batch_size", "sampler", "steps", "precision", "users_per_s",
    "compile_s", "flops_per_user", "bytes_per_user", ...}, ...], "train": {"batch_size", "users_per_s"}}

With `--workdir` holding a trained run, the best checkpoint is benchmarked; otherwise a freshly
initialised model of the same shape (throughput does not depend on the weights).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

# Dense peak FLOP/s and memory bandwidth (bytes/s) of known devices, from the vendors' data sheets.
PEAKS = {
    "H200": {"float32": 67e12, "bfloat16": 989e12, "bandwidth": 4.8e12},
    "H100": {"float32": 67e12, "bfloat16": 989e12, "bandwidth": 3.35e12},
    "A100": {"float32": 19.5e12, "bfloat16": 312e12, "bandwidth": 2.0e12},
    "TPU v5 lite": {"float32": 197e12, "bfloat16": 197e12, "bandwidth": 0.82e12},
    "TPU v4": {"float32": 275e12, "bfloat16": 275e12, "bandwidth": 1.2e12},
}


def device_peak(kind: str) -> dict | None:
  for name, peak in PEAKS.items():
    if name.lower() in kind.lower():
      return peak
  return None


def measure_peak(n: int = 2048, copy_mb: int = 256, repeats: int = 5) -> dict:
  """A measured stand-in for an unknown device's peak: a large matmul's FLOP/s per precision, and
  the bandwidth of a large array copy (read + write)."""
  peak = {}
  for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    a = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    peak[name] = 2 * n**3 / statistics.median(_time(lambda: mm(a), repeats))
  x = jnp.ones((copy_mb * 2**20 // 4,), jnp.float32)
  cp = jax.jit(lambda v: v * 1.0001)
  peak["bandwidth"] = 2 * x.nbytes / statistics.median(_time(lambda: cp(x), repeats))
  peak["measured"] = True
  return peak


def _cast_floats(tree, dtype):
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)


def _tile_batch(batch: dict, size: int) -> dict:
  """Repeats real eval users up to `size` rows (throughput does not depend on who they are)."""
  n = batch["src"].shape[0]
  idx = np.arange(size) % n
  return {k: np.asarray(v)[idx] for k, v in batch.items()}


def _cost(compiled) -> tuple[float | None, float | None]:
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get("flops", 0.0)) or None, float(cost.get("bytes accessed", 0.0)) or None
  except Exception:  # some backends do not implement it
    return None, None


def _time(fn, repeats: int) -> list[float]:
  jax.block_until_ready(fn())  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def _denoiser_step_cost(graphdef, state, batch) -> tuple[float | None, float | None]:
  """FLOPs and bytes of one reverse step: (conditions + one denoiser call) - (conditions)."""
  from flax import nnx

  def conditions(state, batch):
    model, _ = nnx.merge(graphdef, state)
    return model.conditions(batch)

  def one_step(state, batch):
    model, _ = nnx.merge(graphdef, state)
    cond = model.conditions(batch)
    b = batch["src"].shape[0]
    pathway = model.pathway(jnp.ones((b,), jnp.int32))
    x = jnp.zeros((b, model.d), cond.collab_pooled.dtype)
    return model.denoiser(x, jnp.zeros((b,), jnp.int32), cond, pathway)[0]

  f1, b1 = _cost(jax.jit(one_step).lower(state, batch).compile())
  f0, b0 = _cost(jax.jit(conditions).lower(state, batch).compile())
  if None in (f1, f0, b1, b0):
    return None, None
  return max(f1 - f0, 0.0), max(b1 - b0, 0.0)


def bench_sampling(setup, state, batch_size: int, sampler: str, steps: int, precision: str,
                   repeats: int, peak: dict | None = None) -> dict:
  from lgcd_jax import sharding
  from lgcd_jax.data import pipeline
  from flax import nnx
  c = setup.config
  eval_batch = next(iter(pipeline.eval_batches(
      setup.ds, c.direction, "valid", setup.clues, maxlen=c.data.maxlen, clue_len=c.data.clue_len,
      text_dim=c.clues.text_dim, batch_size=min(batch_size, 512))))
  host = _tile_batch(eval_batch, batch_size)
  host = {k: v for k, v in host.items() if k in ("src", "clue", "clue_sim", "summary", "has_summary")}
  dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
  batch = sharding.put_batch(setup.mesh, _cast_floats(host, dtype))
  model_state = _cast_floats(state, dtype)
  graphdef = setup.graphdef

  @jax.jit
  def recommend(state, batch, rng):
    model, _ = nnx.merge(graphdef, state)
    scores = model.score(model.sample(batch, rng, sampler, steps))
    return jax.lax.top_k(scores.astype(jnp.float32), 10)

  rng = jax.random.key(0)
  start = time.perf_counter()
  compiled = recommend.lower(model_state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  flops, bytes_ = _cost(compiled)
  # XLA's cost analysis counts a loop body once: add the other steps-1 denoiser calls by hand.
  step_flops, step_bytes = _denoiser_step_cost(graphdef, model_state, batch)
  if flops and step_flops:
    flops += (steps - 1) * step_flops
  if bytes_ and step_bytes:
    bytes_ += (steps - 1) * step_bytes
  times = _time(lambda: compiled(model_state, batch, rng), repeats)
  median = statistics.median(times)
  row = {
      "batch_size": batch_size, "sampler": sampler, "steps": steps, "precision": precision,
      "users_per_s": batch_size / median, "compile_s": compile_s, "median_s": median,
      "spread_s": max(times) - min(times),
      "flops_per_user": flops / batch_size if flops else None,
      "bytes_per_user": bytes_ / batch_size if bytes_ else None,
  }
  if flops:
    row["achieved_flops_per_s"] = flops / median
  if peak and flops and bytes_:
    row["peak_fraction"] = row["achieved_flops_per_s"] / peak[precision]
    intensity = flops / bytes_
    ridge = peak[precision] / peak["bandwidth"]
    row["bound"] = "compute" if intensity >= ridge else "memory"
    row["arithmetic_intensity"] = intensity
  return row


def bench_train(setup, state, steps: int) -> dict:
  from lgcd_jax import sharding, train
  from lgcd_jax.data import pipeline
  c = setup.config
  pools = pipeline.PairPools.build(setup.ds, c.direction, setup.clues, maxlen=c.data.maxlen,
                                   clue_len=c.data.clue_len, text_dim=c.clues.text_dim)
  data = pipeline.train_dataset(pools, c.data.batch_size, c.seed, use_pseudo=len(pools.pseudo) > 0)
  batches = [sharding.put_batch(setup.mesh, data[i]) for i in range(steps + 1)]
  state = jax.tree.map(jnp.copy, state)  # train_step donates its state
  start = time.perf_counter()
  state, metrics = train.train_step(setup.graphdef, state, batches[0], jax.random.key(0))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(1, steps + 1):
    state, metrics = train.train_step(setup.graphdef, state, batches[i], jax.random.key(i))
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - start
  return {"batch_size": c.data.batch_size, "users_per_s": steps * c.data.batch_size / elapsed,
          "compile_s": compile_s, "steps": steps}


def run(config, workdir: str | None, batch_sizes, precisions, repeats: int, train_steps: int,
        quick: bool) -> dict:
  from lgcd_jax import checkpoint, sharding, train
  from lgcd_jax.data import loading
  workdir = Path(workdir or "workdirs/bench")
  ds = loading.load_dataset(config, workdir)
  setup = train.build(config, ds, workdir)
  state = setup.state
  if (workdir / "checkpoints" / "best").exists():
    from lgcd_jax.cli import UserError
    try:
      restored = checkpoint.Checkpointer(workdir).restore("best", state)
    except checkpoint.CheckpointReadError as e:
      raise UserError(f"{e}; retrain, or bench fresh weights with another --workdir") from e
    if restored is not None:
      state = sharding.put_replicated(setup.mesh, restored[0])
  m = setup.config.model
  chain = m.guess_start_step if m.use_guesser else m.diffusion_steps
  samplers = [("ddim", min(m.sample_steps, chain)), ("ddpm", chain)]
  if quick:
    batch_sizes, precisions, samplers, repeats, train_steps = [64], ["float32"], samplers, 2, 3
  device = jax.devices()[0]
  peak = device_peak(device.device_kind) or (None if quick else measure_peak())
  rows = []
  for b in batch_sizes:
    sharding.check_batch_size(b, "sampling batch size")
    for sampler, steps in samplers:
      for precision in precisions:
        rows.append(bench_sampling(setup, state, b, sampler, steps, precision, repeats, peak))
        print(_format_row(rows[-1]), file=sys.stderr, flush=True)
  return {
      "device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
      "peak": peak,
      "config": setup.config.to_dict(),
      "sampling": rows,
      "train": bench_train(setup, state, train_steps),
  }


def _format_row(r: dict) -> str:
  fmt = lambda x, f: "-" if x is None else format(x, f)
  return (f"{r['batch_size']:>6} {r['sampler']:>5} {r['steps']:>5} {r['precision']:>9} "
          f"{r['users_per_s']:>12,.0f} {r['compile_s']:>9.2f} {r['median_s'] * 1e3:>9.2f} "
          f"{r['spread_s'] * 1e3:>9.2f} {fmt(r['flops_per_user'], '>12.3e')} "
          f"{fmt(r['bytes_per_user'], '>12.3e')} {fmt(r.get('achieved_flops_per_s'), '>10.2e')} "
          f"{r.get('bound', '-'):>8}")


HEADER = (f"{'batch':>6} {'samp':>5} {'steps':>5} {'precision':>9} {'users/s':>12} {'compile_s':>9} "
          f"{'median_ms':>9} {'spread_ms':>9} {'flops/user':>12} {'bytes/user':>12} {'flop/s':>10} "
          f"{'bound':>8}")


def _define_flags():
  """CLI flags, defined only when run as a program (importing the module defines none)."""
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained run to benchmark (else fresh weights); the "
                      "synthetic demo data is prepared under it.")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
  flags.DEFINE_bool("quick", False, "One small setting of each kind (for tests).")
  flags.DEFINE_list("batch_sizes", ["256", "1024", "4096", "16384"], "Sampling batch sizes.")
  flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Sampling precisions.")
  flags.DEFINE_integer("repeats", 5, "Timed calls per setting.")
  flags.DEFINE_integer("train_steps", 20, "Timed train steps.")
  flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  from lgcd_jax import cli, config_check
  f = flags.FLAGS
  config = cli.config_value("config")
  with cli.user_errors():
    config_check.validate(config)
    try:
      batch_sizes = [int(b) for b in f.batch_sizes]
    except ValueError:
      raise cli.UserError(f"--batch_sizes must be integers, got {','.join(f.batch_sizes)}") from None
    result = run(config, f.workdir, batch_sizes, f.precisions, f.repeats, f.train_steps, f.quick)
  if f.json:
    print(json.dumps(result))
    return
  print(f"device: {result['device']}")
  if result["peak"]:
    p = result["peak"]
    print(f"peak ({'measured: large matmul / array copy' if p.get('measured') else 'data sheet'}): "
          f"float32 {p['float32']:.2e} FLOP/s, bfloat16 {p['bfloat16']:.2e} FLOP/s, "
          f"{p['bandwidth']:.2e} B/s; ridge float32 {p['float32'] / p['bandwidth']:.1f} FLOP/B")
  print(HEADER)
  for row in result["sampling"]:
    print(_format_row(row))
  t = result["train"]
  print(f"train step: batch {t['batch_size']}, {t['users_per_s']:,.0f} users/s "
        f"(compile {t['compile_s']:.1f}s)")


if __name__ == "__main__":
  from lgcd_jax import cli as _cli
  _define_flags()
  app.run(main, flags_parser=_cli.flags_parser)
