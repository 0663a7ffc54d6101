"""FSR on CIFAR-10 with 40% symmetric noise (FSR paper Sec. 5.1, Table 4 'CIFAR (noise)').

WRN-28-10, batch 100, no clean meta set; |R| = 2000, reward batch q = 200,
meta step 0.1, score momentum 0.9, momentum re-labeling (decay 0.9, p = 2),
MixUp on the weighted loss. The paper trains 128 epochs with a cyclical cosine
schedule; here a plain cosine over 128 epochs. Warm-up: 5 epochs of uniform
weights (the paper says "a couple of epochs"; our choice).
"""

from famus_jax.presets import cifar10


def get_config():
  c = cifar10.get_config()
  c.method = 'fsr'
  c.num_meta = 0
  c.noise_type = 'symmetric'
  c.noise_rate = 0.4
  c.num_epochs = 128
  c.lr.schedule = 'cosine'
  c.fsr.dictionary_size = 2000
  c.fsr.reward_batch_size = 200
  c.fsr.warmup_epochs = 5
  c.fsr.weight_mode = 'noise'
  c.fsr.relabel = True
  c.fsr.relabel_weight = 2.0
  c.fsr.mixup_alpha = 1.0
  c.fsr.label_smoothing = 0.0
  return c
