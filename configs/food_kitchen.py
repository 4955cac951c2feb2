"""Amazon Food (A) -> Kitchen (B), prepared from the LLMCDSR release:

  python -m lgcd_jax.data.prepare --source=llmcdsr --input=../shared/data/food-kitchen \
      --output=prepared/food-kitchen
"""

from configs import default


def get_config():
  c = default.get_base_config()
  c.data_dir = "prepared/food-kitchen"
  c.data.maxlen = 50
  c.data.batch_size = 256
  c.model.d = 64
  c.train.encoder_steps = 2000
  c.train.steps = 6000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c.lock()
