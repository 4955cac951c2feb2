"""The guesser: a one-shot prediction of x0 from the pooled conditions.

It is trained to match x0 (MSE). At inference its guess, noised to step T' < T, is where the reverse
chain starts, so the chain only refines it. Without diffusion the guesser alone produces x0_hat:
the "w/o diffusion" ablation, an EMCDR-like mapping from source to target representation.
"""

from __future__ import annotations

import jax
from flax import nnx

from lgcd_jax.model.attention import dropout, split_rng


class Guesser(nnx.Module):
  """MLP: LN -> Linear -> GELU -> Linear -> GELU -> Linear, from [B, in_dim] to x0 guess [B, d]."""

  def __init__(self, in_dim: int, d: int, *, rngs: nnx.Rngs, hidden: int | None = None,
               dropout_rate: float = 0.0):
    """in_dim: width of the pooled conditions (+ pathway embedding); hidden defaults to 2 * d."""
    hidden = hidden or 2 * d
    self.ln = nnx.LayerNorm(in_dim, rngs=rngs)
    self.fc1 = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.fc3 = nnx.Linear(hidden, d, rngs=rngs)
    self.drop = nnx.Dropout(dropout_rate)

  def __call__(self, cond: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """cond [B, in_dim] -> guess [B, d]."""
    r1, r2 = split_rng(rng, 2)
    h = dropout(self.drop, jax.nn.gelu(self.fc1(self.ln(cond))), r1)
    h = dropout(self.drop, jax.nn.gelu(self.fc2(h)), r2)
    return self.fc3(h)
