"""FSR on CIFAR-100 with 40% symmetric noise (FSR paper Sec. 5.1, Table 4 'CIFAR (noise)').

As configs/cifar10_fsr_noise.py: WRN-28-10, batch 100, no clean meta set,
|R| = 2000 (20 per class), reward batch q = 200 (2 per class), re-labeling
p = 2, MixUp, cosine schedule over 128 epochs, 5 warm-up epochs.
"""

from configs import cifar100


def get_config():
  c = cifar100.get_config()
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
