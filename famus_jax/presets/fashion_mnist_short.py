"""The accuracy-grid schedule on real Fashion-MNIST, sized for a 2-core CPU.

Same ResNet-8 and augmentation as configs/fashion_mnist.py, but on a
class-balanced 8000-image subset of the (noisy) training set, 5 epochs of 80
steps (batch 100), lr 0.1 divided by 10 at epochs 3 and 4, evaluation on the
full 10000-image test set after every epoch. 1000 clean class-balanced meta
images are held out of training for every method (ERM and FSR do not use
them, so all methods train on the same 8000 images). FSR: a 1000-id
dictionary (100 per class, the size of the meta set), one warm-up epoch.

One run of exact MW-Net takes a few minutes on one CPU core
(`scripts/accuracy_grid.sh` runs a grid of methods on it).
"""

from famus_jax.presets import fashion_mnist


def get_config():
  c = fashion_mnist.get_config()
  c.train_subset = 8000
  c.num_meta = 1000
  c.num_epochs = 5
  c.lr.boundaries_epochs = (3, 4)
  c.eval_every = 80
  c.checkpoint_every = 80
  c.log_every = 20
  c.weights_log_every = 5
  c.fsr.dictionary_size = 1000
  c.fsr.reward_batch_size = 100
  c.fsr.warmup_epochs = 1
  return c
