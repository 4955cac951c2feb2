"""XLA compiler options this project sets by default, because they measured faster here.

On jaxlib 0.10's CPU backend, XLA hands dots *with the elementwise work around them* to YNNPACK
("ynn_fusion"), and such a fusion materialises every broadcast constant it reads: the tanh-GELU of
the source encoder wrote four [1024, 50, 256] float32 constants per call (21 % of the
encoder's op time in a profile). `xla_cpu_experimental_ynn_fusion_type=individual_dot` keeps YNNPACK
for the dots alone. Measured with the bench (BUILD_NOTES, issue 11, thirteenth session): DDIM-10
sampling +16 %, DDPM-50 +11 %, the train steps +6-8 %, results equal up to float rounding.

The options only touch the CPU compiler (GPU and TPU runs ignore them), are added to `XLA_FLAGS`
only when the user's `XLA_FLAGS` does not set them already, only for the jaxlib versions they were
measured on (an option a jaxlib does not know is a fatal error there), and not at all with
`LGCD_JAX_XLA_DEFAULTS=0`. They take effect when this runs before JAX creates its CPU client:
`lgcd_jax/__init__.py` applies them on import, ahead of any computation of the project's own.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "individual_dot"}
MEASURED_JAXLIB = ("0.10.2",)
OPT_OUT = "LGCD_JAX_XLA_DEFAULTS"


def _jaxlib_version() -> str | None:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return None


def with_defaults(xla_flags: str, jaxlib_version: str | None) -> str:
  """xla_flags with each of CPU_FLAGS appended that it does not set (unchanged for other
  jaxlib versions)."""
  if jaxlib_version not in MEASURED_JAXLIB:
    return xla_flags
  for name, value in CPU_FLAGS.items():
    if f"--{name}=" not in xla_flags and not xla_flags.rstrip().endswith(f"--{name}"):
      xla_flags = f"{xla_flags} --{name}={value}".strip()
  return xla_flags


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds the defaults to environ["XLA_FLAGS"] (see the module docstring for when)."""
  if environ.get(OPT_OUT, "1").strip() == "0":
    return
  flags = environ.get("XLA_FLAGS", "")
  new = with_defaults(flags, _jaxlib_version())
  if new != flags:
    environ["XLA_FLAGS"] = new
