"""LGCD in JAX: language-guided conditional diffusion for cross-domain recommendation."""

from lgcd_jax import xla_defaults

# Before any JAX computation of the project's: XLA reads XLA_FLAGS when it creates a backend.
xla_defaults.apply()

__version__ = "0.1.0"
