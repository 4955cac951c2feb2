"""One run of one method: load data, fit or train, evaluate valid and (once) test, write results."""

from __future__ import annotations

import logging
from pathlib import Path

import jax

from lgcd_jax import config_check
from lgcd_jax import results as results_lib
from lgcd_jax import train
from lgcd_jax.baselines import cooccurrence, llm_only, mf, popularity
from lgcd_jax.clues import source as clue_source
from lgcd_jax.data import loading
from lgcd_jax.data import pipeline
from lgcd_jax.data.prepared import SPLITS, direction_domains
from lgcd_jax.evaluation import evaluator
from lgcd_jax.methods import BASELINES
from lgcd_jax.text import encoders as text_encoders


def default_workdir(config_path: str, config, base=None) -> str:
  """workdirs/<config name>-<method>-<direction>[-<hash>]: the hash (config_check.override_hash)
  names what `config` changes from `base`, the config file's own values, so runs with other settings
  (--config.seed=1, --config.model.use_pseudo=False, ...) never share a workdir by accident; a
  change a resume may make (a longer train.steps, eval cadence) keeps the name."""
  name = f"{Path(config_path.partition(':')[0]).stem}-{config.method}-{config.direction}"
  suffix = config_check.override_hash(base, config) if base is not None else ""
  return str(Path("workdirs") / (f"{name}-{suffix}" if suffix else name))


def make_baseline(config, ds):
  """(model, clues its eval batches need or None)."""
  if config.method == "llm_only":
    clues = titles = None
    if config.clues.clue_dir:
      clues = clue_source.load_or_make(config, ds)
    elif config.clues.bridge_mode == "text" or float(config.clues.text_weight) != 0.0:
      # The bridge ranks with title embeddings: the same ones a trained run's bridge clues use.
      titles = text_encoders.title_embeddings(config, ds, direction_domains(config.direction))
    return llm_only.LLMOnly(ds, config.direction, config, clues, titles), clues

  cls = {"popularity": popularity.Popularity, "cooccurrence": cooccurrence.Cooccurrence,
         "mf": mf.JointMF, "mf_recency": mf.RecencyMF}[config.method]
  return cls(ds, config.direction, config), None


def run(config, workdir: str | Path) -> dict:
  config_check.validate(config)  # a bad value stops here, with one line (cli.UserError)
  workdir = Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
  ds = loading.load_dataset(config, workdir)
  data = loading.describe(config, ds)
  log = results_lib.MetricsLog(workdir, enabled=is_main)
  if config.method in BASELINES:
    model, clues = make_baseline(config, ds)
    scores = {split: evaluator.evaluate(model.score,
                                         pipeline.eval_batches_for(config, ds, split, clues))
              for split in SPLITS}
    for split in SPLITS:
      log.write("eval", split=split, **{k: scores[split][k] for k in ("sampled", "full")})
    extra = {}
    if config.method == "llm_only":
      extra = {"clue_source": model.source,
               "clue_coverage": clue_source.coverage(clues, ds, config.direction)}
    res = results_lib.make_results(config.method, config.direction, data, scores["valid"],
                                   scores["test"], config=config.to_dict(), **extra)
  else:
    res = train.train_and_evaluate(config, workdir, ds, data, log)
  if is_main:
    path = results_lib.write_results(workdir, res)
    logging.info("results: %s", path)
    print(_summary_line(res) + f"\nresults written to {path}")
  return res


def _summary_line(res: dict) -> str:
  t = res["test"]
  return (f"{res['method']} {res['direction']} test: sampled HR@5 {t['sampled']['HR@5']:.4f} "
          f"NDCG@5 {t['sampled']['NDCG@5']:.4f} | full HR@10 {t['full']['HR@10']:.4f} "
          f"MRR {t['full']['MRR']:.4f}")
