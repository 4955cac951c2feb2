"""The demo: the embedded synthetic world, the whole system in a few minutes on a laptop CPU."""

from configs import default


def get_config():
  c = default.get_base_config()
  c.synthetic.enabled = True
  c.synthetic.scale = 1.0
  c.data.maxlen = 30
  c.data.batch_size = 128
  c.model.d = 64
  c.model.diffusion_steps = 50
  c.model.guess_start_step = 25
  c.train.encoder_steps = 300
  c.train.steps = 1200
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  return c.lock()
