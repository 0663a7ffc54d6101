"""CIFAR-100 without clean data: FaMUS on two co-trained networks (FaMUS supplement Alg. 2).

As configs/cifar10_pseudo_clean.py (PreAct ResNet-18, batch 64, lr 0.02, 300
epochs, decays at 200 / 250, semi-supervised pseudo-clean co-training) with
DivideMix's CIFAR-100 values: 30 warm-up epochs, lambda_u = 150 (its choice
at 50% symmetric noise), alpha = 4.
"""

from famus_jax.presets import _dividemix, cifar10_pseudo_clean


def get_config():
  c = cifar10_pseudo_clean.get_config()
  c.dataset = 'cifar100'
  c.cotrain.warmup_epochs = 30
  c.cotrain.lambda_u = _dividemix.lambda_u(c.dataset, c.noise_type, c.noise_rate)
  return c
