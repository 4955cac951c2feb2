"""Tests for the XLA options the project sets by default (lgcd_jax/xla_defaults.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from lgcd_jax import xla_defaults

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
MEASURED = xla_defaults.MEASURED_JAXLIB[0]


def test_defaults_are_appended_to_the_users_flags():
  assert xla_defaults.with_defaults("", MEASURED) == f"{FLAG}=individual_dot"
  assert (xla_defaults.with_defaults("--xla_force_host_platform_device_count=2", MEASURED)
          == f"--xla_force_host_platform_device_count=2 {FLAG}=individual_dot")


def test_the_users_own_setting_wins_and_other_jaxlibs_are_left_alone():
  assert xla_defaults.with_defaults(f"{FLAG}=", MEASURED) == f"{FLAG}="
  assert xla_defaults.with_defaults(f"{FLAG}=dot,eltwise", MEASURED) == f"{FLAG}=dot,eltwise"
  assert xla_defaults.with_defaults("", "0.0.1") == ""
  assert xla_defaults.with_defaults("", None) == ""


def test_apply_honours_the_opt_out():
  env = {xla_defaults.OPT_OUT: "0"}
  xla_defaults.apply(env)
  assert "XLA_FLAGS" not in env
  env = {"XLA_FLAGS": f"{FLAG}=dot"}
  xla_defaults.apply(env)
  assert env["XLA_FLAGS"] == f"{FLAG}=dot"


def test_importing_the_package_sets_flags_this_jaxlib_accepts():
  # XLA aborts the process on an option it does not know: run a computation with them in place.
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_defaults.OPT_OUT)}
  code = ("import os, lgcd_jax, jax, jax.numpy as jnp; "
          "x = jnp.ones((64, 32)); print(float(jax.nn.gelu(x @ x.T).sum())); "
          "print(os.environ.get('XLA_FLAGS', ''))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  total, flags = out.stdout.split("\n")[:2]
  assert abs(float(total) - 64 * 64 * 32.0) < 1.0
  expected = xla_defaults.with_defaults("", xla_defaults._jaxlib_version())
  assert flags == expected
