"""Trains and evaluates one method on one direction of a prepared dataset.

  python main.py --config=configs/demo.py --workdir=workdirs/demo
  python main.py --config=configs/food_kitchen.py --config.method=cooccurrence --config.direction=B2A

Writes WORKDIR/results.json, WORKDIR/metrics.jsonl and (for trained methods) orbax checkpoints.
Running it again on the same workdir resumes, if the config is the same but for the fields a resume
may change (lgcd_jax/config_check.py: e.g. a longer train.steps); otherwise it stops and says which
fields differ. The default workdir's name carries a hash of the overrides, so runs with other settings
get their own. One process per workdir: a second one started on it stops at once, naming the first.
A user's mistake (an unknown config field, a bad value, a missing dataset) ends with one `error:`
line and exit status 2.
"""

import logging
import os

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results and checkpoints go (default: "
                               "config.workdir, else workdirs/<config name>-<method>-<direction>"
                               "[-<overrides hash>]).")
flags.mark_flags_as_required(["config"])


def _maybe_init_distributed():
  """Joins a multi-host run when the environment says there is one.

  Explicit: JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i on every host.
  Otherwise JAX's own cluster detection (SLURM, Cloud TPU, MPI) when such a cluster is visible.
  """
  import jax
  explicit = os.environ.get("JAX_NUM_PROCESSES")
  detected = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("SLURM_NTASKS", "1") != "1"
  if not (explicit or detected or os.environ.get("JAX_COORDINATOR_ADDRESS")):
    return
  # Cross-process collectives on CPU hosts (harmless on GPU/TPU, whose own collectives are used).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(os.environ.get("JAX_COORDINATOR_ADDRESS"), int(explicit),
                               int(os.environ["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()


class _QuietLibraries(logging.Filter):
  """Orbax logs every save and restore at INFO; keep ours, drop theirs below WARNING."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def _use_compilation_cache(jax):
  """Keeps compiled programs on disk, so that the runs of a suite (same shapes, other seeds or
  switches) and every resume skip the compile (minutes on a busy CPU for the Food-Kitchen model).
  JAX_COMPILATION_CACHE_DIR, when set, wins; LGCD_JAX_XLA_CACHE=0 turns it off."""
  if os.environ.get("LGCD_JAX_XLA_CACHE", "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  path = os.path.join(os.path.expanduser("~"), ".cache", "lgcd_jax", "xla")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv):
  from lgcd_jax import cli
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_QuietLibraries())
  config = cli.config_value("config")
  _maybe_init_distributed()
  import jax
  _use_compilation_cache(jax)
  from lgcd_jax import config_check, experiment, workdir_lock
  with cli.user_errors():
    config_check.validate(config)
    config_file = flags.FLAGS["config"].config_filename
    workdir = _WORKDIR.value or config.workdir or experiment.default_workdir(
        config_file, config, cli.load_config_file(config_file))
    if jax.process_index() == 0:  # the other hosts of a multi-host run share process 0's workdir
      workdir_lock.acquire(workdir, "workdir")
    experiment.run(config, workdir)


if __name__ == "__main__":
  from lgcd_jax import cli as _cli
  app.run(main, flags_parser=_cli.flags_parser)
