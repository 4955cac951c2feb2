"""The demo: the embedded synthetic world, the whole system in a few minutes on a laptop CPU."""

from configs import default


def get_config():
  c = default.get_base_config()
  c.synthetic.enabled = True
  c.synthetic.scale = 1.0
  c.data.maxlen = 30
  c.data.batch_size = 128
  c.model.d = 64
  c.model.dropout = 0.0  # each dropout site costs compile time; this small world does not need it
  c.model.id_init = "mf"  # joint-MF item factors: valid HR@5 0.13 -> 0.165 (BUILD_NOTES)
  c.model.item_bias = True
  c.model.diffusion_steps = 50
  c.model.guess_start_step = 25
  # Sized for < 5 minutes on a 2-core CPU, compile included.
  c.train.encoder_steps = 150
  c.train.steps = 600
  c.train.eval_every = 150
  c.train.checkpoint_every = 150
  return c.lock()
