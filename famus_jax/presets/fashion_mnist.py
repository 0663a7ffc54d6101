"""Real Fashion-MNIST, offline (Debian's dataset-fashion-mnist), 40% symmetric noise.

A ResNet-8 (3 stages of one basic block, 16/32/64 channels) so that a 2-core
CPU runs an epoch in minutes; 1000 clean meta images; flips are off (the
classes are not mirror-symmetric in the same way as CIFAR's), crops with
padding 2; 10 epochs with the lr divided by 10 at epochs 6 and 8.
"""

from famus_jax import config as base


def get_config():
  c = base.get_config()
  c.dataset = 'fashion_mnist'
  c.model = 'resnet'
  c.depth = 8
  c.augment.crop_padding = 2
  c.augment.flip = False
  c.num_epochs = 10
  c.lr.boundaries_epochs = (6, 8)
  c.eval_every = 590
  c.checkpoint_every = 590
  return c
