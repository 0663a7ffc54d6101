"""Real Fashion-MNIST without clean data: FaMUS on two co-trained networks (Alg. 2), offline.

The long schedule of configs/fashion_mnist_long.py (ResNet-8, an 8000-image
class-balanced subset, 60% symmetric noise, 20 epochs of 80 steps, lr 0.1
divided by 10 at epochs 10 and 15) with no clean meta images: two networks,
each one's meta batches from the other's per-epoch GMM pseudo-clean set,
after 2 warm-up epochs of plain cross-entropy. The semi-supervised part is
off here (turn it on with --config.cotrain.semi_supervised=True; DivideMix
with --config.method=dividemix); its ramp-up is 5
epochs, since the schedule is 20.
"""

from famus_jax.presets import fashion_mnist_long


def get_config():
  c = fashion_mnist_long.get_config()
  c.method = 'famus'
  c.meta_set = 'pseudo_clean'
  c.num_meta = 0
  c.cotrain.warmup_epochs = 2
  c.cotrain.rampup_epochs = 5.0
  return c
