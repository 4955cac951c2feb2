"""Item feature tables: a trained ID embedding plus a frozen, projected title embedding per item.

Inputs follow the batch contract: index 0 is padding and item j of the domain is input j + 1. A
table always returns zeros for index 0, so padded positions carry no signal into any sum or mean.

The title embeddings (from a sentence encoder) are constants of the dataset. They are stored in a
`FrozenEmbedding` variable rather than an `nnx.Param`, so they travel with the model's state (and
its checkpoints) while an optimizer built with `wrt=nnx.Param` never touches them; only the linear
projection of the titles to the model width is trained.

One table per domain. Components that need item features receive the table explicitly; a module
object is never shared between two owners.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class FrozenEmbedding(nnx.Variable):
  """A constant array kept in the model state (and checkpoints) but never trained."""


class ItemTable(nnx.Module):
  """ID embedding (+ projected frozen title embedding) of one domain's items.

  Attributes:
    num_items: N, the number of real items; valid inputs are 0 (padding) .. N.
    d: the model width.
    has_titles: whether a title embedding was given.
  """

  def __init__(self, num_items: int, d: int, title_emb: np.ndarray | None = None, *,
               rngs: nnx.Rngs, id_init: np.ndarray | None = None):
    """Builds the table.

    Args:
      num_items: N, real items in the domain.
      d: model width.
      title_emb: optional [N, text_dim] title embeddings of items 0..N-1 (frozen).
      rngs: initialisation randomness.
      id_init: optional [N, d] initial ID embeddings (e.g. item factors of a joint factorisation);
        random N(0, 1/d) when absent.
    """
    if num_items < 1:
      raise ValueError(f"num_items must be >= 1, got {num_items}")
    self.num_items = int(num_items)
    self.d = int(d)
    if id_init is None:
      # Std 1/sqrt(d) gives unit-norm rows, so initial dot-product scores are O(1).
      rows = jax.random.normal(rngs.params(), (num_items, d)) / np.sqrt(d)
    else:
      id_init = np.asarray(id_init, np.float32)
      if id_init.shape != (num_items, d):
        raise ValueError(f"id_init must be [{num_items}, {d}], got {id_init.shape}")
      rows = jnp.asarray(id_init)
    self.id_embedding = nnx.Param(jnp.concatenate([jnp.zeros((1, d)), rows], axis=0))

    self.has_titles = title_emb is not None
    if title_emb is not None:
      title_emb = np.asarray(title_emb, np.float32)
      if title_emb.ndim != 2 or title_emb.shape[0] != num_items:
        raise ValueError(f"title_emb must be [{num_items}, text_dim], got {title_emb.shape}")
      padded = np.concatenate([np.zeros((1, title_emb.shape[1]), np.float32), title_emb], axis=0)
      self.title_embedding = FrozenEmbedding(jnp.asarray(padded))
      # No bias: a padded row (zeros) then projects to exactly zero as well.
      self.title_proj = nnx.Linear(title_emb.shape[1], d, use_bias=False, rngs=rngs)
    else:
      self.title_embedding = None
      self.title_proj = None

  def _pad_mask(self, idx: jax.Array) -> jax.Array:
    return (idx > 0)[..., None].astype(jnp.float32)

  def title(self, idx: jax.Array) -> jax.Array:
    """The projected title part [..., d] of inputs idx (zeros for padding, or with no titles)."""
    if not self.has_titles:
      return jnp.zeros(idx.shape + (self.d,), jnp.float32)
    return self._projected_titles(idx) * self._pad_mask(idx)

  def _projected_titles(self, idx: jax.Array) -> jax.Array:
    """title_proj(title_embedding[idx]) [..., d], in the cheaper order for idx's size (static)."""
    table = self.title_embedding[...]
    if idx.size >= table.shape[0]:
      # More lookups than rows (a 1024 x 50 sampling batch over 8,662 food items): project every
      # row once and gather d-wide rows, instead of gathering text_dim-wide rows and projecting
      # each lookup (on the CPU that gather alone cost more than the whole table's projection).
      return self.title_proj(table)[idx]
    return self.title_proj(table[idx])

  def __call__(self, idx: jax.Array) -> jax.Array:
    """Item features [..., d] of inputs idx (items + 1); exactly zero where idx == 0."""
    emb = self.id_embedding[...][idx]
    if self.has_titles:
      emb = emb + self._projected_titles(idx)
    return emb * self._pad_mask(idx)

  def with_title(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(`self(idx)`, `self.title(idx)`) with the titles gathered and projected once, for a caller
    that needs both (the conditions: the source encoder's inputs and the title tokens)."""
    title = self.title(idx)  # zero at padding already
    return self.id_embedding[...][idx] * self._pad_mask(idx) + title, title

  def features(self) -> jax.Array:
    """Features [N + 1, d] of every input 0..N, row 0 (padding) zero: `self(idx)` is
    `features()[idx]`. One projection of the whole title table, for a caller that scores every item
    anyway and looks up many rows besides (the diffusion-stage loss)."""
    emb = self.id_embedding[...]
    if self.has_titles:
      emb = emb + self.title_proj(self.title_embedding[...])
    return emb.at[0].set(0.0)

  def title_features(self) -> jax.Array:
    """Projected titles [N + 1, d] of every input 0..N, row 0 zero: `self.title(idx)` is
    `title_features()[idx]` (all zeros without titles)."""
    if not self.has_titles:
      return jnp.zeros((self.num_items + 1, self.d), jnp.float32)
    return self.title_proj(self.title_embedding[...]).at[0].set(0.0)

  def all_items(self) -> jax.Array:
    """Features [N, d] of items 0..N-1 (inputs 1..N): row j scores item j."""
    return self.features()[1:]
