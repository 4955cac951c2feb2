"""Data parallelism with `jax.sharding`: one Mesh with a `data` axis over every device of every host.

The train state is replicated; batches are split along their first axis. The same code runs on 1 CPU,
8 GPUs, or a multi-host TPU slice: each process hands in its own rows of the global batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  # Auto axes: XLA propagates the batch sharding through the model; no per-op annotations needed.
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch_size(global_batch: int, what: str = "batch size") -> None:
  n = jax.device_count()
  if global_batch % n:
    raise ValueError(f"{what} {global_batch} must be divisible by the number of devices ({n})")


def put_batch(mesh: Mesh, local_batch: dict) -> dict:
  """This process's rows -> global arrays sharded over the `data` axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def put_replicated(mesh: Mesh, tree):
  return jax.device_put(tree, replicated(mesh))
