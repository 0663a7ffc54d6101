"""A 20-epoch schedule on real Fashion-MNIST where plain training underfits the noise.

Same ResNet-8, augmentation (crops), 8000-image class-balanced training
subset and 1000 clean meta images as configs/fashion_mnist_short.py, but 20
epochs of 80 steps (1600 steps, batch 100): lr 0.1, divided by 10 at epochs
10 and 15, 60% symmetric noise. Measured: ERM never memorises here (its
training accuracy against the noisy labels stays near 0.37, below a clean
predictor's 0.46), so this is not the regime re-weighting is for; the
memorisation regime is configs/fashion_mnist_memorise.py.
"""

from famus_jax.presets import fashion_mnist_short


def get_config():
  c = fashion_mnist_short.get_config()
  c.noise_rate = 0.6
  c.num_epochs = 20
  c.lr.boundaries_epochs = (10, 15)
  c.weights_log_every = 20
  return c
