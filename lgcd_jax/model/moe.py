"""Mixture-of-experts fusion: the denoiser's last stage, which turns its read-outs into x0_hat.

E expert MLPs each map the concatenated input [x_t, collaborative read-out, semantic read-out, step
embedding] to a d-dim output; a softmax gate computed from a separate gate input (the pooled
conditions and the pathway embedding) mixes them per user. The gate is how the model decides, per
user and pathway, how much to trust the language clue against the collaborative signal.

With use_moe=False (the ablation) there is a single expert MLP and the gate is a column of ones,
so the interface (out, gate probs) stays the same. Experts are stored as stacked weights and run as
plain matmuls over all experts at once (the gate-weighted second layer as one [B, E * hidden] x
[E * hidden, d] product) rather than E separate modules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lgcd_jax.model.attention import dropout, split_rng


class MoEFusion(nnx.Module):
  """Softmax-gated mixture of E two-layer MLP experts."""

  def __init__(self, in_dim: int, d: int, num_experts: int, gate_in_dim: int, *, rngs: nnx.Rngs,
               use_moe: bool = True, hidden: int | None = None, dropout_rate: float = 0.0):
    """Builds the fusion.

    Args:
      in_dim: width of the expert input.
      d: output width.
      num_experts: E (ignored, i.e. 1, when use_moe is False).
      gate_in_dim: width of the gate input.
      rngs: initialisation randomness.
      use_moe: False gives the single-MLP ablation.
      hidden: expert hidden width (default 2 * d).
      dropout_rate: dropout on the expert hidden layer.
    """
    self.use_moe = bool(use_moe)
    self.num_experts = int(num_experts) if use_moe else 1
    if self.num_experts < 1:
      raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    hidden = hidden or 2 * d
    e = self.num_experts
    init = nnx.initializers.lecun_normal()  # fan_in is axis -2: per-expert input width.
    self.w1 = nnx.Param(init(rngs.params(), (e, in_dim, hidden)))
    self.b1 = nnx.Param(jnp.zeros((e, hidden)))
    self.w2 = nnx.Param(init(rngs.params(), (e, hidden, d)))
    self.b2 = nnx.Param(jnp.zeros((e, d)))
    self.drop = nnx.Dropout(dropout_rate)
    # Zero-initialised gate: every user starts from the uniform mixture.
    self.gate = (nnx.Linear(gate_in_dim, e, kernel_init=nnx.initializers.zeros, rngs=rngs)
                 if self.use_moe else None)

  def __call__(self, x: jax.Array, gate_in: jax.Array, rng: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """x [B, in_dim], gate_in [B, gate_in_dim] -> (out [B, d], gate probs [B, E])."""
    pre = jnp.einsum("bi,eih->beh", x, self.w1[...]) + self.b1[...]
    return self.finish(pre, self.gate_probs(gate_in, x.shape[0], x.dtype), rng)

  # The split form, for an input whose parts change at different rates (the reverse chain: the
  # condition parts are fixed per batch, x_t changes at every step). The first layer is linear in
  # the input, so it is a sum of per-part products with row slices of w1.

  def gate_probs(self, gate_in: jax.Array, batch_size: int | None = None,
                 dtype: jnp.dtype | None = None) -> jax.Array:
    """Gate probabilities [B, E] (a column of ones without MoE)."""
    if self.use_moe:
      return jax.nn.softmax(self.gate(gate_in), axis=-1)
    return jnp.ones((batch_size or gate_in.shape[0], 1), dtype or gate_in.dtype)

  def first_layer_rows(self, start: int, width: int) -> jax.Array:
    """Rows start..start+width of every expert's first layer as one matrix [width, E * hidden]
    (expert-major columns), the layout a plain matmul wants."""
    rows = self.w1[...][:, start:start + width]  # [E, width, hidden]
    return jnp.transpose(rows, (1, 0, 2)).reshape(width, -1)

  def first_layer_part(self, x: jax.Array, start: int, rows: jax.Array | None = None
                       ) -> jax.Array:
    """x [B, w] times rows start..start+w of the first layer: [B, E, hidden], no bias.
    rows: `first_layer_rows(start, w)`, when the caller has them: a reverse chain's steps then
    do not slice and transpose w1 at every step (the CPU backend copied it inside the loop)."""
    if rows is None:
      rows = self.first_layer_rows(start, x.shape[-1])
    return (x @ rows).reshape(x.shape[0], self.num_experts, -1)

  def finish(self, pre: jax.Array, probs: jax.Array, rng: jax.Array | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """From the first layer's pre-activation [B, E, hidden] (bias included) to (out, probs)."""
    (r_drop,) = split_rng(rng, 1)
    h = dropout(self.drop, jax.nn.gelu(pre), r_drop)
    # sum_e p_e (h_e w2_e + b2_e) as one [B, E * hidden] x [E * hidden, d] matmul: the per-expert
    # einsum ran as a batched dot whose layout made the CPU copy w2 at every reverse step.
    w2 = self.w2[...]
    e, hidden, d = w2.shape
    mixed = (probs[..., None] * h).reshape(h.shape[0], e * hidden)
    return mixed @ w2.reshape(e * hidden, d) + probs @ self.b2[...], probs
