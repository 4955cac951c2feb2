"""Trains and evaluates one method on one direction of a prepared dataset.

  python main.py --config=configs/demo.py --workdir=workdirs/demo
  python main.py --config=configs/food_kitchen.py --config.method=cooccurrence --config.direction=B2A

Writes WORKDIR/results.json, WORKDIR/metrics.jsonl and (for trained methods) orbax checkpoints.
Running it again on the same workdir resumes.
"""

import logging
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results and checkpoints go "
                               "(default: workdirs/<config name>-<method>-<direction>).")
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_QuietLibraries())
  _maybe_init_distributed()
  from lgcd_jax import experiment
  from lgcd_jax.data.errors import DataError
  config = _CONFIG.value
  workdir = _WORKDIR.value or experiment.default_workdir(flags.FLAGS["config"].config_filename,
                                                         config)
  try:
    experiment.run(config, workdir)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
