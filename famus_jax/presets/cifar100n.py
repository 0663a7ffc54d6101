"""CIFAR-100N (human labels, 40.2% wrong) with the cifar10n preset's FaMUS supplement setting.

Data: the official cifar-100-python.tar.gz and CIFAR-100_human.pt side by side in data_dir.
"""

from famus_jax.presets import cifar10n


def get_config():
  c = cifar10n.get_config()
  c.dataset = 'cifar100n'
  c.noisy_label_set = 'noisy'
  return c
