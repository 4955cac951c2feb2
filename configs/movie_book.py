"""Amazon Movie (A) -> Book (B), prepared from the LLMCDSR release (same layout as food-kitchen):

  python -m lgcd_jax.data.prepare --source=llmcdsr --input=DIR/movie-book --output=prepared/movie-book
"""

from configs import default


def get_config():
  c = default.get_base_config()
  c.data_dir = "prepared/movie-book"
  c.data.maxlen = 50
  c.data.batch_size = 256
  c.model.d = 64
  c.train.encoder_steps = 2000
  c.train.steps = 6000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c.lock()
