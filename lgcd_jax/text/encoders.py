"""Chooses the sentence encoder a config asks for and embeds item titles with it (cached)."""

from __future__ import annotations

from lgcd_jax.data.prepared import PreparedDataset

ENCODERS = ("hashing", "minilm")


def make_encoder(config):
  name = config.clues.encoder
  if name == "hashing":
    from lgcd_jax.text.hashing import HashingEncoder
    return HashingEncoder(dim=config.clues.text_dim)
  if name == "minilm":
    from lgcd_jax.text import minilm
    encoder = minilm.load(config.clues.encoder_path or None)
    if encoder.dim != config.clues.text_dim:
      raise ValueError(f"clues.text_dim is {config.clues.text_dim} but the encoder gives "
                       f"{encoder.dim}-dimensional embeddings")
    return encoder
  raise ValueError(f"clues.encoder must be one of {ENCODERS}, got {name!r}")


def title_embeddings(config, ds: PreparedDataset, domains, encoder=None) -> dict:
  """{domain: [num_items, text_dim] float32}, computed once per dataset and encoder, then cached."""
  from lgcd_jax.text import cache
  encoder = encoder or make_encoder(config)
  return {d: cache.title_embeddings(ds, d, encoder, progress=True) for d in domains}
