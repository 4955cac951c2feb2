"""Sampling and training throughput: `python -m lgcd_jax.bench --config=configs/X.py [--json]`.

Sampling = condition encoding + the reverse chain + scoring every target item + top-10, one compiled
function, over batch sizes, samplers (DDPM over T steps, DDIM over S) and precisions. For each setting it
reports compile time apart from the steady state (warm-up, then `--repeats` timed calls: median and
spread), and the analytic floor from XLA's cost analysis: FLOPs and bytes accessed per user, the achieved
FLOP/s, and against the device's peak where known, whether the setting is compute- or memory-bound
(arithmetic intensity vs the device's ridge point; on a device without data-sheet figures, such as a CPU, the peak is measured with a large matmul and a large array copy). `--json` prints one JSON object:

  {"device", "backend", "devices", "config", "sampling": [{"batch_size", "sampler", "steps",
    "precision", "users_per_s", "compile_s", "flops_per_user", "bytes_per_user", "peak_bytes",
    "topk_chunk", "items", ...}, ...], "train": {"batch_size", "users_per_s"}}
  (+ "topk" with --topk_sweep, "catalogue" with --catalogue, "population" with
   --population_buckets, "peer" with --compare_peer)

The top-10 is streamed over item chunks (`lgcd_jax.model.scoring`). `--backend=gpu` / `--require_device`
exit with status 2 and one line when JAX sees no such device.

With `--workdir` holding a trained run, the best checkpoint is benchmarked; otherwise a freshly
initialised model of the same shape (throughput does not depend on the weights).
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from lgcd_jax import builder, checkpoint, cli, config_check, inference, profiling, sharding, train
from lgcd_jax.cli import UserError
from lgcd_jax.data import loading, pipeline
from lgcd_jax.data.prepared import direction_domains
from lgcd_jax.model import scoring
from lgcd_jax.model.lgcd import LGCD

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


def _denoiser_step_cost(graphdef, state, batch, cfg_batched: bool | None = None
                        ) -> tuple[float | None, float | None]:
  """FLOPs and bytes of one reverse step, as the sampler runs it (the cached denoiser, both CFG
  predictions): (setup + two chained steps) - (setup + one step), at different steps so that
  nothing of the second step is shared with the first."""

  def chain(state, batch, n):
    model, _ = nnx.merge(graphdef, state)
    cond = model.conditions(batch)
    b = batch["src"].shape[0]
    denoise_fn = model.sampling_denoiser(cond, model.pathway(jnp.ones((b,), jnp.int32)),
                                         cfg_batched=cfg_batched)
    x = cond.collab_pooled
    for i in range(n):
      x = denoise_fn(x, jnp.full((b,), i, jnp.int32)).astype(x.dtype)
    return x

  f2, b2 = _cost(jax.jit(chain, static_argnums=2).lower(state, batch, 2).compile())
  f1, b1 = _cost(jax.jit(chain, static_argnums=2).lower(state, batch, 1).compile())
  if None in (f1, f2, b1, b2):
    return None, None
  return max(f2 - f1, 0.0), max(b2 - b1, 0.0)


def _memory(compiled) -> dict:
  """XLA's memory analysis of a compiled function: peak, temporaries and arguments, in bytes."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # some backends do not implement it
    return {}
  if m is None:
    return {}
  temp, args = int(m.temp_size_in_bytes), int(m.argument_size_in_bytes)
  out, alias = int(m.output_size_in_bytes), int(m.alias_size_in_bytes)
  # Live at once at worst: arguments, outputs and temporaries (less what outputs alias). The CPU
  # client's own peak_memory_in_bytes field reads lower than the temporaries alone, so it is not used.
  return {"peak_bytes": args + out + temp - alias, "temp_bytes": temp, "argument_bytes": args}


def _topk_cost_gap(graphdef, state, batch_size: int, d: int, dtype, chunk: int | None,
                   tgt_feats=None) -> tuple[float, float]:
  """What XLA's cost analysis misses of a streamed top-k: it counts the chunk loop's body once,
  so (full scores + top-k) - (streamed) stands in for the other chunks' scoring. tgt_feats: the
  precomputed target features the timed function scores with (None: it projects them)."""
  if chunk is None:
    return 0.0, 0.0
  x = jnp.zeros((batch_size, d), dtype)
  costs = []
  for c in (None, chunk):
    fn = jax.jit(lambda state, x, f, c=c: nnx.merge(graphdef, state)[0].top_k(x, 10, c, f))
    costs.append(_cost(fn.lower(state, x, tgt_feats).compile()))
  (f_full, b_full), (f_stream, b_stream) = costs
  if None in (f_full, b_full, f_stream, b_stream):
    return 0.0, 0.0
  return max(f_full - f_stream, 0.0), max(b_full - b_stream, 0.0)


def _group_widths(src: np.ndarray, group_size: int, widths) -> dict[int, int]:
  """{width: groups} of `inference.top_k`'s micro-batches of a host batch's src (one group of the
  whole batch at its width when group_size covers it): the rows sorted by length, as top_k does."""
  if not widths or group_size >= len(src):
    return {src.shape[1]: -(-len(src) // group_size)}
  counts: dict[int, int] = {}
  for _, _, width in pipeline.length_sorted_batches(
      src, group_size, inference.group_buckets(widths, src.shape[1])):
    counts[width] = counts.get(width, 0) + 1
  return counts


def _whole_batch_cost(recommend, graphdef, state, batch, rng, steps: int, cfg_batched,
                      topk_gap: tuple[float, float], feats) -> tuple[float | None, float | None]:
  """FLOPs and bytes of `recommend` over the whole of `batch` at once, its loops counted in full:
  XLA's cost analysis counts a loop body once, so the other steps-1 denoiser calls and the other
  chunks of the streamed top-k (`topk_gap`, from `_topk_cost_gap`) are added by hand."""
  flops, bytes_ = _cost(recommend.lower(state, batch, rng, None, (), feats).compile())
  step_flops, step_bytes = _denoiser_step_cost(graphdef, state, batch, cfg_batched)
  gap_flops, gap_bytes = topk_gap
  if flops:
    flops += (steps - 1) * (step_flops or 0.0) + gap_flops
  if bytes_:
    bytes_ += (steps - 1) * (step_bytes or 0.0) + gap_bytes
  return flops, bytes_


def bench_sampling(setup, state, batch_size: int, sampler: str, steps: int, precision: str,
                   repeats: int, peak: dict | None = None, topk_chunk: int | None = None,
                   graphdef=None, run: bool = True, cfg_batched: bool | None = None,
                   host: dict | None = None, grouping: tuple = (None, ()),
                   timers: dict | None = None) -> dict:
  """One sampling row. topk_chunk: items per chunk of the streamed top-k (None: full scores, then
  `lax.top_k`). graphdef: another model's (e.g. a synthetic catalogue), with its state. run=False:
  compile and analyse only (FLOPs, memory), no timing. cfg_batched: CFG's form (see
  `LGCD.sampling_denoiser`; None: the backend's default). host: the batch to sample (default: the
  valid split's first users, tiled to batch_size, maxlen wide). grouping: `inference.top_k`'s
  (micro_batch, group_widths) ((None, ()): the whole batch at once). timers: gets
  `timers[(batch_size, sampler, steps, precision)] = repeats -> [seconds per call]`, the compiled
  row timed again (the interleaved peer rounds, `peer_rounds`)."""
  c = setup.config
  if host is None:
    eval_batch = next(iter(pipeline.eval_batches(
        setup.ds, c.direction, "valid", setup.clues, maxlen=c.data.maxlen,
        clue_len=c.data.clue_len, text_dim=c.clues.text_dim, batch_size=min(batch_size, 512))))
    host = _tile_batch(eval_batch, batch_size)
  host = {k: v for k, v in host.items()
          if k in ("src", "clue", "clue_sim", "summary", "has_summary", "noise_id")}
  dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
  batch = sharding.put_batch(setup.mesh, _cast_floats(host, dtype))
  model_state = _cast_floats(state, dtype)
  graphdef = graphdef or setup.graphdef
  micro_batch, group_widths = grouping
  if not micro_batch or micro_batch >= batch_size:
    micro_batch, group_widths = None, ()

  # As a server does (`recommend.Recommender`), the item tables are projected once per set of
  # weights, outside the timed function: they do not depend on the users.
  feats = jax.block_until_ready(inference.item_features_step(graphdef, model_state))
  start = time.perf_counter()
  jax.block_until_ready(inference.item_features_step(graphdef, model_state))
  item_features_s = time.perf_counter() - start

  @functools.partial(jax.jit, static_argnums=(3, 4))
  def recommend(state, batch, rng, micro_batch, group_widths, feats):
    model, _ = nnx.merge(graphdef, state)
    if cfg_batched is not None:
      model.sampling_denoiser = functools.partial(model.sampling_denoiser, cfg_batched=cfg_batched)
    return inference.top_k(model, batch, rng, sampler, steps, 10, topk_chunk, micro_batch,
                           tuple(group_widths), feats)

  rng = jax.random.key(0)
  start = time.perf_counter()
  compiled = recommend.lower(model_state, batch, rng, micro_batch, tuple(group_widths),
                             feats).compile()
  compile_s = time.perf_counter() - start
  # XLA's cost analysis counts a loop body once (the micro-batches' lax.map, the reverse chain,
  # the streamed top-k) and one lax.switch branch: cost the whole-group computation at each width
  # instead, times the number of groups at that width.
  group_size = micro_batch or batch_size
  topk_gap = _topk_cost_gap(graphdef, model_state, group_size, c.model.d, dtype, topk_chunk,
                            feats.tgt)
  flops = bytes_ = 0.0
  for width, count in _group_widths(host["src"], group_size, group_widths).items():
    part = {k: v[:group_size] for k, v in host.items()}
    part["src"] = part["src"][:, part["src"].shape[1] - width:]
    part = _cast_floats(part, dtype)
    part = (sharding.put_batch(setup.mesh, part) if group_size == batch_size
            else jax.device_put(part))
    f, b = _whole_batch_cost(recommend, graphdef, model_state, part, rng, steps, cfg_batched,
                             topk_gap, feats)
    flops = None if flops is None or f is None else flops + count * f
    bytes_ = None if bytes_ is None or b is None else bytes_ + count * b
  call = lambda: compiled(model_state, batch, rng, feats)
  times = _time(call, repeats) if run else [float("nan")]
  if timers is not None and run:
    timers[(batch_size, sampler, steps, precision)] = lambda n: _time(call, n)
  median = statistics.median(times)
  row = {
      "batch_size": batch_size, "sampler": sampler, "steps": steps, "precision": precision,
      "users_per_s": batch_size / median, "best_users_per_s": batch_size / min(times),
      "compile_s": compile_s, "median_s": median, "item_features_s": item_features_s,
      "spread_s": max(times) - min(times),
      "flops_per_user": flops / batch_size if flops else None,
      "bytes_per_user": bytes_ / batch_size if bytes_ else None,
      "topk_chunk": topk_chunk, "micro_batch": micro_batch, "group_widths": list(group_widths),
      "items": int(nnx.merge(graphdef, state)[0].tgt_table.num_items),
      **_memory(compiled),
  }
  if flops and run:
    row["achieved_flops_per_s"] = flops / median
  if peak and flops and bytes_ and run:
    row["peak_fraction"] = row["achieved_flops_per_s"] / peak[precision]
    intensity = flops / bytes_
    ridge = peak[precision] / peak["bandwidth"]
    row["bound"] = "compute" if intensity >= ridge else "memory"
    row["arithmetic_intensity"] = intensity
  return row


def population_batches(setup, batch_size: int, buckets) -> list[dict]:
  """Every source-domain history of the dataset (single-domain and overlap users: the population a
  cold-start service would score), its last maxlen items, sorted by length and cut into batches of
  `batch_size` whose `src` is cut to the smallest of `buckets` (`pipeline.parse_length_buckets`)
  that holds it, as `eval_batches` does with data.eval_length_buckets. No clue or summary (the
  work does not depend on them: clue_len is fixed); the last batch is padded with its last user."""
  c = setup.config
  src = np.concatenate([pipeline.pad_ragged_left(r, c.data.maxlen)
                        for r in setup.ds.domain_sequences(_src_domain(c))])
  src = src[pipeline.needed_width(src) > 0]  # a user needs one source item
  n = len(src)
  batches = []
  for lo, (rows, real, width) in zip(range(0, n, batch_size),
                                     pipeline.length_sorted_batches(src, batch_size, buckets)):
    batches.append({
        "src": src[rows][:, c.data.maxlen - width:],
        "clue": np.zeros((batch_size, c.data.clue_len), np.int32),
        "clue_sim": np.zeros((batch_size, c.data.clue_len), np.float32),
        "summary": np.zeros((batch_size, c.clues.text_dim), np.float32),
        "has_summary": np.zeros((batch_size,), np.float32),
        "noise_id": np.arange(lo, lo + batch_size, dtype=np.uint32),
        "weight": real.astype(np.float32),
    })
  return batches


def bench_population(setup, state, batch_size: int, sampler: str, steps: int, buckets,
                     repeats: int, topk_chunk: int | None = None,
                     grouping: tuple = (None, ())) -> dict:
  """The default sampler + top-10 over `population_batches`, float32: one compiled function per
  width, timed and costed on the first batch of that width (`bench_sampling`), then summed over the
  widths' batch counts. users_per_s and flops_per_user are per real user (the padded rows of the
  last batch count as cost)."""
  batches = population_batches(setup, batch_size, buckets)
  by_width: dict[int, list[dict]] = {}
  for b in batches:
    by_width.setdefault(b["src"].shape[1], []).append(b)
  users = float(sum(b["weight"].sum() for b in batches))
  seconds = flops = compile_s = 0.0
  widths = []
  for width, group in sorted(by_width.items()):
    host = {k: v for k, v in group[0].items() if k != "weight"}
    row = bench_sampling(setup, state, batch_size, sampler, steps, "float32", repeats,
                         topk_chunk=topk_chunk, host=host, grouping=grouping)
    seconds += len(group) * row["median_s"]
    flops = None if flops is None or not row["flops_per_user"] else (
        flops + len(group) * batch_size * row["flops_per_user"])
    compile_s += row["compile_s"]
    widths.append({"width": width, "batches": len(group), "users_per_s": row["users_per_s"],
                   "flops_per_user": row["flops_per_user"]})
  return {"batch_size": batch_size, "sampler": sampler, "steps": steps, "precision": "float32",
          "users": int(users), "buckets": list(buckets), "widths": widths,
          "users_per_s": users / seconds, "compile_s": compile_s,
          "flops_per_user": flops / users if flops else None}


def _shapes(batches: tuple) -> tuple:
  """The array shapes of a step's batches: which compiled step they need."""
  return tuple(tuple(sorted((k, v.shape) for k, v in b.items())) for b in batches)


def bench_train(setup, state, steps: int, peak: dict | None = None,
                profile_dir: str | None = None) -> dict:
  """The two stages' train steps at the run's batch size: users/s, compile time, FLOPs per user
  (XLA's cost analysis of the compiled step) and achieved FLOP/s (and its share of `peak`).
  profile_dir: also trace two more steps of each stage there (`profiling`) and add the op kinds
  their time went to as the row's "profile".

  Returns the diffusion-stage row (the fields of earlier versions) with the encoder stage's as
  "encoder"."""
  c = setup.config
  data = pipeline.training_data(c, setup.ds, setup.clues)
  put = lambda b: sharding.put_batch(setup.mesh, b)
  stages = {
      "encoder": (train.encoder_step, [tuple(put(b) for b in data.encoder_batches(i))
                                       for i in range(steps + 1)]),
      "diffusion": (train.train_step, [(put(data.pairs[i]),) for i in range(steps + 1)]),
  }
  rows = {}
  for stage, (step_fn, batches) in stages.items():
    state_copy = jax.tree.map(jnp.copy, state)  # the steps donate their state
    # With data.length_buckets the batches come in a few widths: one compiled step per shape, all
    # compiled before the timing, and the FLOPs summed over the timed steps' own shapes.
    compiled, flops_of = {}, {}
    start = time.perf_counter()
    for b in batches:
      key = _shapes(b)
      if key not in compiled:
        compiled[key] = step_fn.lower(setup.graphdef, state_copy, *b, jax.random.key(0)).compile()
        flops_of[key] = _cost(compiled[key])[0]
    compile_s = time.perf_counter() - start
    run_step = lambda st, b, i: compiled[_shapes(b)](st, *b, jax.random.key(i))
    state_copy, metrics = run_step(state_copy, batches[0], 0)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(1, steps + 1):
      state_copy, metrics = run_step(state_copy, batches[i], i)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start
    per_step = [flops_of[_shapes(b)] for b in batches[1:]]
    flops = sum(per_step) / len(per_step) if all(per_step) else None
    row = {"stage": stage, "batch_size": c.data.batch_size, "steps": steps,
           "users_per_s": steps * c.data.batch_size / elapsed, "compile_s": compile_s,
           "flops_per_user": flops / c.data.batch_size if flops else None,
           "shapes": len(compiled)}
    if flops:
      row["achieved_flops_per_s"] = flops * steps / elapsed
      if peak:
        row["peak_fraction"] = row["achieved_flops_per_s"] / peak["float32"]
    if profile_dir:
      def two_steps(state_copy=state_copy):
        for i in (1, 2):
          state_copy, metrics = run_step(state_copy, batches[i], steps + i)
        return metrics
      trace = profiling.profile(two_steps, Path(profile_dir) / stage)
      row["profile"] = profiling.summarize(trace) if trace else []
    rows[stage] = row
  return {**rows["diffusion"], "encoder": rows["encoder"]}


def bench_topk(setup, state, batch_size: int, chunks, repeats: int) -> list[dict]:
  """Scoring every target item + top-10 alone, per top-k method: full scores then `lax.top_k`
  (chunk None) or the streamed running top-k over chunks of each size."""
  graphdef = setup.graphdef
  x = jax.random.normal(jax.random.key(0), (batch_size, setup.config.model.d))
  rows = []
  for chunk in chunks:
    fn = jax.jit(lambda state, x, chunk=chunk: nnx.merge(graphdef, state)[0].top_k(x, 10, chunk))
    compiled = fn.lower(state, x).compile()
    median = statistics.median(_time(lambda: compiled(state, x), repeats))
    rows.append({"batch_size": batch_size, "topk_chunk": chunk, "median_s": median,
                 "users_per_s": batch_size / median, **_memory(compiled)})
  return rows


def bench_catalogue(setup, batch_size: int, num_items: int, topk_chunk: int | None,
                    repeats: int, grouping: tuple = (None, ())) -> list[dict]:
  """Sampling (the config's default sampler) + top-10 over a synthetic catalogue of num_items
  target items (fresh weights, no titles) at float32: the streamed top-k timed, with its peak
  memory, and the full-scores top-k compiled only, for its peak memory."""
  c = setup.config
  m = c.model
  model = LGCD(c, setup.ds.num_items(_src_domain(c)), num_items, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split((model, None))
  state = sharding.put_replicated(setup.mesh, state)
  chain = m.guess_start_step if m.use_guesser else m.diffusion_steps
  sampler = m.sampler
  steps = min(m.sample_steps, chain) if sampler == "ddim" else chain
  rows = []
  for chunk, run in ((topk_chunk, True), (None, False)):
    rows.append(bench_sampling(setup, state, batch_size, sampler, steps, "float32", repeats,
                               topk_chunk=chunk, graphdef=graphdef, run=run,
                               grouping=grouping))
  return rows


def _src_domain(config) -> str:
  return direction_domains(config.direction)[0]


def device_info() -> dict:
  """The backend and devices this process runs on."""
  return {"backend": jax.default_backend(),
          "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]}


def require_backend(backend: str | None, require_device: bool) -> str | None:
  """None when the request is met, else the one line to fail with. backend: "cpu", "gpu", "tpu"
  (None: JAX's default); require_device: an accelerator (not the CPU) must be visible."""
  if backend:
    if backend == "cpu":
      jax.config.update("jax_platforms", "cpu")
    try:
      found = jax.devices(backend)
    except RuntimeError:
      found = []
    if not found:
      return (f"bench: --backend={backend} asked for, but JAX sees no {backend} device "
              f"(default backend: {jax.default_backend()}); install the matching extra (README, "
              f"'Devices and hosts') or drop the flag")
  if require_device and jax.default_backend() == "cpu":
    return ("bench: --require_device asked for an accelerator, but JAX sees only the CPU; install "
            "the matching extra (README, 'Devices and hosts') or drop the flag")
  return None


def run(config, workdir: str | None, batch_sizes, precisions, repeats: int, train_steps: int,
        quick: bool, *, topk_chunk: int | None = None, topk_sweep=(), catalogue: int = 0,
        cfg_batched: bool | None = None, profile_dir: str | None = None,
        population_buckets=(), micro_batch: int | None = None, timers: dict | None = None,
        sampling: bool = True) -> dict:
  """The whole benchmark. topk_chunk: the streamed top-k's chunk (None: the model default,
  0: full scores); topk_sweep: chunk sizes to time scoring + top-k alone at (0: full);
  catalogue: items of a synthetic-catalogue row (0: none); train_steps=0: no train step;
  profile_dir: trace the train steps there (see `bench_train`); population_buckets: widths of a
  row over every source-domain history in length-bucketed batches (`bench_population`; empty:
  none); micro_batch: users per group of the sampler's lax.map, sorted by length and each cut to
  its width (None: the backend's default, `inference.default_grouping`; 0: the whole batch at
  once, maxlen wide); timers: filled by `bench_sampling` (see there); sampling=False: no
  sampling rows (batch_sizes[0] still sets the batch of the catalogue, top-k and population
  rows)."""
  workdir = Path(workdir or "workdirs/bench")
  ds = loading.load_dataset(config, workdir)
  setup = builder.build(config, ds, workdir)
  state = setup.state
  if (workdir / "checkpoints" / "best").exists():
    try:
      restored = checkpoint.Checkpointer(workdir).restore("best", state)
    except checkpoint.CheckpointReadError as e:
      raise UserError(f"{e}; retrain, or bench fresh weights with another --workdir") from e
    if restored is not None:
      state = sharding.put_replicated(setup.mesh, restored[0])
  topk_chunk = scoring.DEFAULT_CHUNK if topk_chunk is None else (topk_chunk or None)
  default_size, default_widths = inference.default_grouping()
  grouping = ((default_size, default_widths) if micro_batch is None
              else (micro_batch, default_widths or inference.GROUP_WIDTHS) if micro_batch
              else (None, ()))
  m = setup.config.model
  chain = m.guess_start_step if m.use_guesser else m.diffusion_steps
  samplers = [("ddim", min(m.sample_steps, chain)), ("ddpm", chain)]
  if quick:
    batch_sizes, precisions, samplers, repeats, train_steps = [64], ["float32"], samplers, 2, 3
  device = jax.devices()[0]
  peak = device_peak(device.device_kind) or (None if quick else measure_peak())
  for b in batch_sizes:
    sharding.check_batch_size(b, "sampling batch size")
  rows = []
  for b in batch_sizes if sampling else ():
    for sampler, steps in samplers:
      for precision in precisions:
        rows.append(bench_sampling(setup, state, b, sampler, steps, precision, repeats, peak,
                                   topk_chunk=topk_chunk, cfg_batched=cfg_batched,
                                   grouping=grouping, timers=timers))
        print(_format_row(rows[-1]), file=sys.stderr, flush=True)
  result = {
      "device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
      **device_info(),
      "peak": peak,
      "config": setup.config.to_dict(),
      "sampling": rows,
  }
  if topk_sweep:
    result["topk"] = bench_topk(setup, state, batch_sizes[0],
                                [int(c) or None for c in topk_sweep], repeats)
  if population_buckets:
    try:
      buckets = pipeline.parse_length_buckets(population_buckets, setup.config.data.maxlen,
                                              "--population_buckets")
    except ValueError as e:
      raise UserError(str(e)) from None
    result["population"] = bench_population(setup, state, batch_sizes[0], *samplers[0], buckets,
                                            repeats, topk_chunk, grouping)
  if catalogue:
    result["catalogue"] = bench_catalogue(setup, batch_sizes[0], int(catalogue), topk_chunk,
                                          max(1, min(repeats, 2)), grouping)
  if train_steps:
    result["train"] = bench_train(setup, state, train_steps, peak, profile_dir)
  return result


PEER_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "torch_peer.py"


def run_peer(python: str, result: dict, batch_size: int, repeats: int) -> dict:
  """Runs benchmarks/torch_peer.py under `python` (one with torch) at this run's shapes: T = the
  DDPM row's steps, the batch, d, target items, source sequence length, layers, heads, CFG weight."""
  c = result["config"]
  m = c["model"]
  ddpm = next((r for r in result["sampling"] if r["sampler"] == "ddpm"), None)
  steps = ddpm["steps"] if ddpm else m["diffusion_steps"]
  items = result["sampling"][0]["items"]
  args = [python, str(PEER_SCRIPT), f"--T={steps}", f"--batch={batch_size}", f"--d={m['d']}",
          f"--items={items}", f"--seq_len={c['data']['maxlen']}",
          f"--layers={m['encoder_layers']}", f"--heads={m['heads']}",
          f"--cfg_weight={m['cfg_weight']}", f"--repeats={repeats}", "--json"]
  proc = subprocess.run(args, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"torch peer failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
  peer = json.loads(proc.stdout.strip().splitlines()[-1])
  peer["command"] = " ".join(args[1:])
  return peer


def peer_rounds(python: str, result: dict, timers: dict, batch_size: int, repeats: int,
                rounds: int) -> list[dict]:
  """`rounds` rounds, each timing every sampling row at `batch_size` again (its compiled function,
  `repeats` calls) and then the peer (`run_peer`): each round's ratio compares two timings a few
  seconds apart, so a shared machine's drift in speed over minutes does not enter it."""
  out = []
  for i in range(rounds):
    rows = {}
    for (b, sampler, steps, precision), timer in timers.items():
      if b == batch_size:
        times = timer(repeats)
        rows[f"{sampler}-{steps} {precision}"] = batch_size / statistics.median(times)
    peer = run_peer(python, result, batch_size, repeats)
    out.append({"round": i, "peer_users_per_s": peer["users_per_s"], "users_per_s": rows,
                "ratio": {k: v / peer["users_per_s"] for k, v in rows.items()}})
    print(f"peer round {i + 1}/{rounds}: peer {peer['users_per_s']:,.0f} users/s; "
          + ", ".join(f"{k} {v:,.0f} ({v / peer['users_per_s']:.2f}x)" for k, v in rows.items()),
          file=sys.stderr, flush=True)
  return out


def print_peer(result: dict) -> None:
  """The peer's users/s and each row's ratio to it: of the medians, and of the best repeats (on a
  shared machine, where other load comes in bursts, the best is the steadier of the two)."""
  peer = result["peer"]
  best = peer.get("best_users_per_s")
  print(f"torch peer (DDPM-{peer['T']} + CFG, batch {peer['batch']}, {peer['items']:,} items, "
        f"torch {peer['torch']}, {peer['threads']} threads): {peer['users_per_s']:,.0f} users/s"
        + (f" (best repeat {best:,.0f})" if best else ""))
  for r in result["sampling"]:
    if r["batch_size"] == peer["batch"]:
      line = (f"  lgcd-jax {r['sampler']}-{r['steps']} {r['precision']}: "
              f"{r['users_per_s']:,.0f} users/s = {r['users_per_s'] / peer['users_per_s']:.2f}x "
              f"the peer")
      if best and r.get("best_users_per_s"):
        line += (f"; best repeats {r['best_users_per_s']:,.0f} users/s = "
                 f"{r['best_users_per_s'] / best:.2f}x")
      print(line)
  rounds = result.get("peer_rounds")
  if rounds:
    for name in rounds[0]["ratio"]:
      ratios = sorted(r["ratio"][name] for r in rounds)
      print(f"  interleaved, {len(rounds)} rounds (each: lgcd-jax timed, then the peer): "
            f"lgcd-jax {name} / peer median {statistics.median(ratios):.2f}x "
            f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}x)")


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


def print_result(result: dict) -> None:
  """The table and lines `main` prints for one `run` result (also read back from `--json`
  output by benchmarks/summarise_bench.py)."""
  print(f"device: {result['device']}; backend {result['backend']}, devices "
        f"{', '.join(result['devices'])}")
  if result["peak"]:
    p = result["peak"]
    print(f"peak ({'measured: large matmul / array copy' if p.get('measured') else 'data sheet'}): "
          f"float32 {p['float32']:.2e} FLOP/s, bfloat16 {p['bfloat16']:.2e} FLOP/s, "
          f"{p['bandwidth']:.2e} B/s; ridge float32 {p['float32'] / p['bandwidth']:.1f} FLOP/B")
  if result["sampling"]:
    r = result["sampling"][0]
    print(f"sampling in micro-batches of {r['micro_batch']} users sorted by length, cut to widths "
          f"{r['group_widths'] or 'maxlen'}" if r.get("micro_batch")
          else "sampling the whole batch at once")
    print(HEADER)
    for row in result["sampling"]:
      print(_format_row(row))
  for r in result.get("topk", []):
    print(f"score + top-10 only: batch {r['batch_size']}, chunk {r['topk_chunk'] or 'full'}: "
          f"{r['median_s'] * 1e3:.1f} ms ({r['users_per_s']:,.0f} users/s), peak "
          f"{_mb(r.get('peak_bytes'))}")
  for r in result.get("catalogue", []):
    timed = r["median_s"] == r["median_s"]  # not NaN
    print(f"catalogue {r['items']:,} items, batch {r['batch_size']}, {r['sampler']}-{r['steps']}, "
          f"top-k chunk {r['topk_chunk'] or 'full'}: "
          + (f"{r['users_per_s']:,.0f} users/s, " if timed else "compiled only, ")
          + f"{r['flops_per_user']:.3e} FLOPs/user, peak {_mb(r.get('peak_bytes'))} "
          f"(temporaries {_mb(r.get('temp_bytes'))}, arguments {_mb(r.get('argument_bytes'))})")
  if "population" in result:
    r = result["population"]
    print(f"population: {r['users']:,} source histories, batch {r['batch_size']}, "
          f"{r['sampler']}-{r['steps']}, widths {r['buckets']}: {r['users_per_s']:,.0f} users/s, "
          + (f"{r['flops_per_user']:.3e} FLOPs/user" if r["flops_per_user"] else "FLOPs unknown")
          + f" (compile {r['compile_s']:.1f}s; batches per width: "
          + ", ".join(f"{w['width']}: {w['batches']}" for w in r["widths"]) + ")")
  if "train" in result:
    for t in (result["train"]["encoder"], result["train"]):
      flops = (f", {t['flops_per_user']:.3e} FLOPs/user, {t['achieved_flops_per_s']:.3e} FLOP/s"
               if t.get("flops_per_user") else "")
      share = f" ({t['peak_fraction']:.0%} of peak)" if t.get("peak_fraction") else ""
      shapes = f", {t['shapes']} batch shapes" if t.get("shapes", 1) > 1 else ""
      print(f"train step, {t['stage']} stage: batch {t['batch_size']}, {t['users_per_s']:,.0f} "
            f"users/s{flops}{share} (compile {t['compile_s']:.1f}s{shapes})")
      if "profile" in t:
        print("  op time by kind (summed over threads): " + (", ".join(
            f"{p['op']} {p['share']:.0%}" for p in t["profile"]) or "no op events in the trace"))
  if "peer" in result:
    print_peer(result)


def _define_flags():
  """CLI flags, defined only when run as a program (importing the module defines none)."""
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained run to benchmark (else fresh weights); the "
                      "synthetic demo data is prepared under it.")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
  flags.DEFINE_bool("quick", False, "One small setting of each kind (for tests).")
  flags.DEFINE_list("batch_sizes", ["256", "1024", "4096", "16384"],
                    "Sampling batch sizes (empty: no sampling rows, e.g. to bench the train steps "
                    "only with --train_steps).")
  flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Sampling precisions.")
  flags.DEFINE_bool("sampling", True, "Time the sampling rows; --nosampling keeps only the rows "
                    "other flags ask for (--catalogue, --topk_sweep, --population_buckets, the "
                    "train steps), at the first of --batch_sizes.")
  flags.DEFINE_integer("repeats", 5, "Timed calls per setting.")
  flags.DEFINE_integer("train_steps", 20, "Timed train steps (0: no train row).")
  flags.DEFINE_integer("topk_chunk", None, "Items per chunk of the streamed top-k (default: "
                       "lgcd_jax.model.scoring.DEFAULT_CHUNK; 0: full scores, then lax.top_k).")
  flags.DEFINE_integer("micro_batch", None, "Users per micro-batch of the sampler's lax.map, "
                       "sorted by length and cut to the width each needs (default: "
                       "lgcd_jax.inference.default_grouping() for the backend; 0: the whole "
                       "batch at once, maxlen wide).")
  flags.DEFINE_list("topk_sweep", [], "Also time scoring + top-10 alone at these chunk sizes "
                    "(0: full scores), at the first batch size.")
  flags.DEFINE_integer("catalogue", 0, "Also a row over a synthetic catalogue of this many target "
                       "items (e.g. 1000000), with XLA's peak memory of the compiled function.")
  flags.DEFINE_list("population_buckets", [], "Also a row over every source-domain history of the "
                    "dataset, sorted by length and cut into batches of the first batch size at "
                    "these widths (e.g. 4,8,16,32; data.eval_length_buckets does the same to "
                    "evaluation batches), with the default sampler: users/s and FLOPs/user.")
  flags.DEFINE_enum("cfg_form", "auto", ["auto", "batched", "two"], "CFG's conditional and "
                    "unconditional predictions: one batched call, two calls, or the backend's pick.")
  flags.DEFINE_enum("backend", None, ["cpu", "gpu", "tpu"], "Run on this backend; exit 2 if JAX "
                    "sees none of its devices.")
  flags.DEFINE_bool("require_device", False, "Exit 2 unless an accelerator (not the CPU) is seen.")
  flags.DEFINE_string("profile_dir", None, "Also trace two train steps of each stage into this "
                      "directory (jax.profiler; Perfetto JSON) and print the op kinds their time "
                      "went to.")
  flags.DEFINE_string("compare_peer", None, "A Python with torch: also run benchmarks/torch_peer.py "
                      "at this config's shapes and print users/s ratios.")
  flags.DEFINE_integer("peer_rounds", 0, "With --compare_peer: also this many interleaved rounds "
                       "(the first batch size's rows timed again, then the peer), and the median "
                       "of the rounds' ratios (steadier on a shared machine).")
  flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  f = flags.FLAGS
  failure = require_backend(f.backend, f.require_device)
  if failure:
    print(failure, file=sys.stderr)
    sys.exit(2)
  config = cli.config_value("config")
  with cli.user_errors():
    config_check.validate(config)
    try:
      batch_sizes = [int(b) for b in f.batch_sizes]
    except ValueError:
      raise cli.UserError(f"--batch_sizes must be integers, got {','.join(f.batch_sizes)}") from None
    if f.micro_batch is not None and f.micro_batch < 0:
      raise cli.UserError(f"--micro_batch must be >= 0 (0: the whole batch), got {f.micro_batch}")
    if f.peer_rounds < 0 or (f.peer_rounds and not f.compare_peer):
      raise cli.UserError(f"--peer_rounds must be >= 0 and needs --compare_peer; got "
                          f"{f.peer_rounds}")
    if not batch_sizes and (f.compare_peer or f.topk_sweep or f.catalogue
                            or f.population_buckets):
      raise cli.UserError("--compare_peer, --topk_sweep, --catalogue and --population_buckets "
                          "need a --batch_sizes (an empty one benches the train steps only)")
    if f.compare_peer and not f.sampling:
      raise cli.UserError("--compare_peer compares the sampling rows: it cannot run with "
                          "--nosampling")
    timers = {}
    result = run(config, f.workdir, batch_sizes, f.precisions, f.repeats, f.train_steps, f.quick,
                 topk_chunk=f.topk_chunk, topk_sweep=f.topk_sweep, catalogue=f.catalogue,
                 cfg_batched={"auto": None, "batched": True, "two": False}[f.cfg_form],
                 profile_dir=f.profile_dir, population_buckets=f.population_buckets,
                 micro_batch=f.micro_batch, timers=timers, sampling=f.sampling)
    if f.compare_peer:
      result["peer"] = run_peer(f.compare_peer, result, batch_sizes[0], f.repeats)
      if f.peer_rounds:
        result["peer_rounds"] = peer_rounds(f.compare_peer, result, timers, batch_sizes[0],
                                            f.repeats, f.peer_rounds)
  if f.json:
    print(json.dumps(result))
    return
  print_result(result)

def _mb(n) -> str:
  return "-" if n is None else f"{n / 2**20:,.0f} MiB"


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser)
