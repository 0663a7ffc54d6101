"""CIFAR-100, MW-Net's setup: WRN-28-10, batch 100, 40% symmetric noise, 1000 meta images."""

from famus_jax import config as base


def get_config():
  c = base.get_config()
  c.dataset = 'cifar100'
  c.model = 'wide_resnet'
  c.depth = 28
  c.width = 10
  return c
