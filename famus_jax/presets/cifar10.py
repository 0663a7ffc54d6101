"""CIFAR-10, MW-Net's setup: WRN-28-10, batch 100, 40% symmetric noise, 1000 meta images.

lr 0.1 with momentum 0.9 and weight decay 5e-4, divided by 10 at epochs 80 and
100 of 120 (MW-Net's CIFAR schedule); meta model lr 1e-3.
"""

from famus_jax import config as base


def get_config():
  c = base.get_config()
  c.dataset = 'cifar10'
  c.model = 'wide_resnet'
  c.depth = 28
  c.width = 10
  return c
