"""FSR on CIFAR-100 with 40% symmetric noise (FSR paper Sec. 5.1, Table 4 'CIFAR (noise)').

configs/cifar10_fsr_noise.py on CIFAR-100: WRN-28-10, batch 100, no clean
meta set, |R| = 2000 (20 per class), reward batch q = 200 (2 per class),
re-labeling p = 2, MixUp, cosine schedule over 128 epochs, 5 warm-up epochs.
"""

from famus_jax.presets import cifar10_fsr_noise


def get_config():
  c = cifar10_fsr_noise.get_config()
  c.dataset = 'cifar100'
  return c
