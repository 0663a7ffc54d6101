"""CIFAR-10N, worst human label set (40.2% wrong), the FaMUS supplement's training setting.

PreAct ResNet-18, batch 64, lr 0.02 divided by 10 at epochs 200 and 250 of 300. FaMUS with
pseudo-clean meta sets from two co-trained networks (supplement Alg. 2), so no clean label
is used. Data: the official cifar-10-python.tar.gz and CIFAR-10_human.pt side by side in
data_dir (famus_jax/data/cifar_n.py). MW-Net's protocol instead (1000 training images with
their clean labels as the meta set): --config.meta_set=clean --config.num_meta=1000
--config.clean_meta_from_train=True.
"""

from famus_jax import config as base


def get_config():
  c = base.get_config()
  c.dataset = 'cifar10n'
  c.noise_type = 'none'          # the human labels are the noise
  c.num_meta = 0
  c.meta_set = 'pseudo_clean'
  c.method = 'famus'
  c.model = 'preact_resnet18'
  c.batch_size = 64
  c.meta_batch_size = 64
  c.lr.base = 0.02
  c.num_epochs = 300
  c.lr.boundaries_epochs = (200, 250)
  return c
