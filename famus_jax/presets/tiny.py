"""Tiny synthetic run for tests and smoke runs: seconds on a CPU."""

from famus_jax import config as base


def get_config():
  c = base.get_config()
  c.dataset = 'synthetic'
  c.data_source = 'synthetic'
  c.model = 'small_cnn'
  c.width = 8
  c.noise_rate = 0.4
  c.num_meta = 40
  c.batch_size = 16
  c.meta_batch_size = 16
  c.eval_batch_size = 64
  c.num_epochs = 0
  c.num_steps = 12
  c.lr.schedule = 'constant'
  c.augment.crop_padding = 1
  c.mwnet.hidden = 16
  # A run of a dozen steps: the meta model updated at every step and FaMUS's sampled estimate
  # from the first one (the schema's period 5 and 250-step exact warm-up would leave a tiny run
  # two meta updates and no sampled estimate).
  c.meta.update_every = 1
  c.famus.exact_steps = 0
  c.log_every = 4
  c.eval_every = 6
  c.checkpoint_every = 6
  c.progress_bar = False
  return c
