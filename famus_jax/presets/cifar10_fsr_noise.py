"""FSR on CIFAR-10 with 40% symmetric noise (FSR paper Sec. 5.1, Table 4 'CIFAR (noise)').

WRN-28-10, batch 100, no clean meta set; |R| = 2000, reward batch q = 200,
meta step 0.1, score momentum 0.9, momentum re-labeling (beta = 0.1: 0.1 of the
old estimate kept per visit; p = 2), MixUp with lam_i in [0.5, 1] per example,
w_i times each example's whole MixUp loss. The paper trains 128 epochs with a
cyclical cosine schedule; here a plain cosine over 128 epochs. Re-weighting,
re-labeling and MixUp's weights start after 20 epochs of uniform weights (the
reference code's meta start epoch for CIFAR noise).
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
  c.fsr.warmup_epochs = 20
  c.fsr.weight_mode = 'noise'
  c.fsr.relabel = True
  c.fsr.relabel_weight = 2.0
  c.fsr.mixup_alpha = 1.0
  c.fsr.label_smoothing = 0.0
  return c
