"""LGCD in JAX: language-guided conditional diffusion for cross-domain recommendation."""

__version__ = "0.1.0"
