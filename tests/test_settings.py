"""The model's typed settings: built once from the config, defaults only from configs/default.py."""

import dataclasses

import ml_collections
import pytest
from flax import nnx

from configs import default, tiny
from lgcd_jax.model.lgcd import LGCD
from lgcd_jax.model.settings import LGCDSettings


def test_settings_follow_the_config_and_the_model_reads_them():
  c = tiny.get_config()
  c.model.cfg_weight = 3.5
  c.train.residual_weight = 0.25
  s = LGCDSettings.from_config(c)
  assert (s.d, s.cfg_weight, s.residual_weight, s.maxlen) == (c.model.d, 3.5, 0.25, c.data.maxlen)
  assert LGCD(c, 7, 9, rngs=nnx.Rngs(0)).settings == s
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.d = 3
  hash(s)  # a static jit argument (part of the model's graphdef) must be hashable


def test_a_missing_field_gets_the_default_of_configs_default():
  """An older checkpoint's config lacks newer fields: they come from configs/default.py, the one set
  of defaults (train.guesser_rec_weight there is 1.0)."""
  old = tiny.get_config().to_dict()
  del old["train"]["guesser_rec_weight"], old["model"]["anchor_recency"]
  s = LGCDSettings.from_config(ml_collections.ConfigDict(old))
  base = default.get_base_config()
  assert s.guesser_rec_weight == base.train.guesser_rec_weight == 1.0
  assert s.anchor_recency == base.model.anchor_recency


@pytest.mark.parametrize("field,value,message", [
    ("conditioning", "attention", "model.conditioning"),
    ("sampler", "euler", "model.sampler"),
    ("anchor", "svd", "model.anchor"),
    ("anchor_recency", 1.5, "anchor_recency"),
    ("guess_start_step", 10**6, "guess_start_step"),
])
def test_bad_settings_name_the_field(field, value, message):
  c = tiny.get_config()
  c.model[field] = value
  with pytest.raises(ValueError, match=message):
    LGCDSettings.from_config(c)
