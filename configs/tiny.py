"""The smallest config: tests shrink the whole system to seconds with it."""

from configs import default


def get_config():
  c = default.get_base_config()
  c.synthetic.enabled = True
  c.synthetic.scale = 0.2
  c.data.maxlen = 12
  c.data.clue_len = 8
  c.data.batch_size = 32
  c.data.eval_batch_size = 64
  c.clues.bridge_k = 10
  c.clues.text_dim = 32
  c.baselines.mf_rank = 16
  c.model.d = 16
  c.model.dropout = 0.0  # as in the demo; dropout paths are unit-tested in test_encoder/denoiser
  c.model.id_init = "mf"  # as in the demo, so the end-to-end tests cover the MF initialisation
  c.model.item_bias = True
  c.model.heads = 2
  c.model.encoder_layers = 1
  c.model.denoiser_layers = 1
  c.model.num_experts = 2
  c.model.diffusion_steps = 10
  c.model.guess_start_step = 5
  c.model.sample_steps = 5
  c.train.encoder_steps = 20
  c.train.steps = 40
  c.train.warmup_steps = 5
  c.train.eval_every = 20
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  return c.lock()
