"""FSR on real Fashion-MNIST (offline), 40% symmetric noise, no clean meta set.

The ResNet-8 and 10-epoch schedule of configs/fashion_mnist.py; |R| = 2000,
reward batch 100, one warm-up epoch, re-labeling (p = 2) and MixUp from the
end of warm-up.
"""

from famus_jax.presets import fashion_mnist


def get_config():
  c = fashion_mnist.get_config()
  c.method = 'fsr'
  c.num_meta = 0
  c.fsr.dictionary_size = 2000
  c.fsr.reward_batch_size = 100
  c.fsr.warmup_epochs = 1
  c.fsr.weight_mode = 'noise'
  c.fsr.relabel = True
  c.fsr.relabel_weight = 2.0
  c.fsr.mixup_alpha = 1.0
  return c
