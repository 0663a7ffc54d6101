"""FSR on long-tailed CIFAR-10, imbalance factor 100, clean labels (FSR paper Sec. 5.2).

ResNet-32, batch 128, 200 epochs: lr 0.1 with a 5-epoch linear warm-up,
multiplied by 0.01 at epochs 160 and 180, weight decay 2e-4 (the schedule of
Cui et al. 2019 that the paper reuses). FSR: |R| = 3000 (300 per class; the
rarest classes repeat their examples), reward batch q = 800, shifted weights
(w - min(w) + 1/b) instead of clipping, label smoothing 0.1 on the training
loss, no MixUp, no re-labeling, and the deferred schedule: re-weighting starts
at epoch 160 (warm-up E = 160; set fsr.warmup_epochs = 0 for the non-deferred
variant).
"""

from famus_jax.presets import cifar10


def get_config():
  c = cifar10.get_config()
  c.method = 'fsr'
  c.num_meta = 0
  c.noise_type = 'none'
  c.noise_rate = 0.0
  c.imbalance_factor = 100.0
  c.model = 'resnet'
  c.depth = 32
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_epochs = 200
  c.optimizer.weight_decay = 2e-4
  c.lr.schedule = 'multistep'
  c.lr.base = 0.1
  c.lr.boundaries_epochs = (160, 180)
  c.lr.decay = 0.01
  c.lr.warmup_epochs = 5.0
  c.fsr.dictionary_size = 3000
  c.fsr.reward_batch_size = 800
  c.fsr.warmup_epochs = 160
  c.fsr.weight_mode = 'longtail'
  c.fsr.relabel = False
  c.fsr.mixup_alpha = 0.0
  c.fsr.label_smoothing = 0.1
  return c
