"""The long accuracy schedule on real Fashion-MNIST: long enough for ERM to memorise.

Same ResNet-8, augmentation, 8000-image class-balanced training subset and
1000 clean meta images as configs/fashion_mnist_short.py, but 20 epochs of 80
steps (1600 steps, batch 100): lr 0.1, divided by 10 at epochs 10 and 15.
After the first decay plain training starts fitting the wrong labels and its
test accuracy falls, which is the regime re-weighting is for; judge methods on
the last-epoch accuracy. Evaluation on the full test set after every epoch.
"""

from famus_jax.presets import fashion_mnist_short


def get_config():
  c = fashion_mnist_short.get_config()
  c.noise_rate = 0.6
  c.num_epochs = 20
  c.lr.boundaries_epochs = (10, 15)
  c.weights_log_every = 20
  return c
