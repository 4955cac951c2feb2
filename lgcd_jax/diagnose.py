"""Which part of a trained LGCD ranks best: its best checkpoint, evaluated part by part.

  python -m lgcd_jax.diagnose --workdir=WORKDIR [--guess_start_steps=5,10,25] [--sample_steps=2,5]
      [--splits=valid,test] [--json]

Rows (sampled HR@5 and full HR@10 per split):
  as trained          the run's own sampler: the figure its results.json reports
  chain T'=N          the reverse chain started from the guess noised to step N instead
  DDIM S=N            DDIM with N steps instead of model.sample_steps
  guess               the sampler without the chain: the guesser's one-shot x0 (on the anchor)
  anchor              the MF anchor alone (model.anchor = "mf"), as the sampler uses it

The run's data (config.data_dir, or its synthetic world) and clues are rebuilt as training built
them. Sampling settings are static, so each row is its own compiled function over the same weights.
Read a split's rows against each other, not to choose a config on test.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path

import jax
import ml_collections
from absl import app, flags
from flax import nnx

from lgcd_jax import builder, checkpoint, cli, inference
from lgcd_jax.cli import UserError
from lgcd_jax.data import loading, pipeline
from lgcd_jax.data.prepared import SPLITS
from lgcd_jax.evaluation import evaluator
from lgcd_jax.methods import BASELINES


@functools.partial(jax.jit, static_argnums=(0,))
def anchor_scores(graphdef, state, batch):
  """[B, items] scores of the model's MF anchor alone, as the sampler uses it."""
  model = nnx.merge(graphdef, state)
  return model.score(model.anchor(batch["src"], sampling=True))


def _restore(workdir: Path):
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    meta = ckpt.restore_meta()
  except checkpoint.CheckpointReadError as e:
    raise UserError(f"{e}; rerun the training or give another --workdir") from e
  if meta is None:
    raise UserError(f"{workdir}: no checkpoint (train first: python main.py --workdir=...)")
  config = ml_collections.ConfigDict(json.loads(meta["config"]))
  if config.method in BASELINES:
    raise UserError(f"{workdir} holds a {config.method} run: only trained methods have parts")
  return ckpt, config


def diagnose(workdir: str | Path, guess_start_steps=(), sample_steps=(), splits=SPLITS,
             echo=print) -> dict:
  """{row name: {split: {"sampled/HR@5", "full/HR@10"}}} of the rows in the module docstring."""
  workdir = Path(workdir)
  ckpt, config = _restore(workdir)
  ds = loading.load_dataset(config, workdir)
  setup = builder.build(config, ds, None)
  restored = ckpt.restore("best", setup.state)
  if restored is None:
    raise UserError(f"{workdir}: no best checkpoint (the run made no evaluation yet)")
  model = nnx.merge(setup.graphdef, restored[0])[0]
  s = model.settings
  key = inference.sampling_key(config.seed)

  rows = {"as trained": s}
  if s.use_diffusion:
    for t in guess_start_steps:
      if s.use_guesser and 1 <= t <= s.diffusion_steps:
        rows[f"chain T'={t}"] = dataclasses.replace(s, guess_start_step=int(t),
                                                    sample_steps=min(s.sample_steps, int(t)))
    if s.sampler == "ddim":
      for n in sample_steps:
        rows[f"DDIM S={n}"] = dataclasses.replace(s, sample_steps=int(n))
    if s.use_guesser:  # without diffusion the sampler returns the guess: the same weights, no chain
      rows["guess"] = dataclasses.replace(s, use_diffusion=False)
  out = {}

  def run(name, score):
    out[name] = {}
    for split in splits:
      r = evaluator.evaluate(score, pipeline.eval_batches_for(config, ds, split, setup.clues))
      out[name][split] = {"sampled/HR@5": r["sampled"]["HR@5"], "full/HR@10": r["full"]["HR@10"]}
    echo(f"{name:16s} " + "  ".join(f"{split} {v['sampled/HR@5']:.4f} ({v['full/HR@10']:.4f})"
                                    for split, v in out[name].items()))

  echo(f"{workdir}: best step {restored[1].get('step')}; sampled HR@5 (full HR@10)")
  for name, settings in rows.items():
    model.settings = settings  # static: a new graphdef, the same weights
    graphdef, state = nnx.split(model)
    run(name, lambda b, g=graphdef, st=state, st_s=settings: inference.score_step(
        g, st, b, st_s.sampler, st_s.sample_steps, key))
  model.settings = s
  if s.anchor != "none":
    graphdef, state = nnx.split(model)
    run("anchor", lambda b: anchor_scores(graphdef, state, b))
  return out


def _define_flags():
  flags.DEFINE_string("workdir", None, "A trained run's workdir.")
  flags.DEFINE_list("guess_start_steps", [], "Chain start steps T' to try besides the run's own.")
  flags.DEFINE_list("sample_steps", [], "DDIM step counts to try besides the run's own.")
  flags.DEFINE_list("splits", list(SPLITS), "Splits to evaluate.")
  flags.DEFINE_bool("json", False, "Print the rows as one JSON object at the end.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  bad = [x for x in f.splits if x not in SPLITS]
  if bad:
    cli.fail(f"--splits: {bad} are not among {list(SPLITS)}")
  try:
    t_values = [int(x) for x in f.guess_start_steps]
    s_values = [int(x) for x in f.sample_steps]
  except ValueError as e:
    cli.fail(f"--guess_start_steps / --sample_steps must be integers ({e})")
  if not Path(f.workdir).is_dir():
    cli.fail(f"--workdir={f.workdir}: no such directory")
  with cli.user_errors():
    out = diagnose(f.workdir, t_values, s_values, f.splits,
                   echo=(lambda line: print(line, file=sys.stderr)) if f.json else print)
  if f.json:
    print(json.dumps(out))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
