"""CNWL red mini-ImageNet at 40% web noise, downsampled to 32x32: the FaMUS supplement setting.

PreAct ResNet-18, batch 64, lr 0.02 divided by 10 at epochs 200 and 250 of 300 (the cifar10n
preset's schedule), FaMUS with pseudo-clean meta sets. Data: a prepared TFDS copy of
controlled_noisy_web_labels/mini_imagenet_red in data_dir (famus_jax/data/cnwl.py);
--config.cnwl.color=blue and --config.cnwl.noise_level=0.8 choose the other configs and levels.
"""

from famus_jax.presets import cifar10n


def get_config():
  c = cifar10n.get_config()
  c.dataset = 'cnwl'
  c.cnwl.image_size = 32
  return c
