"""CIFAR-10 without clean data: FaMUS on two co-trained networks (FaMUS supplement Alg. 2).

The supplement's setting: PreAct ResNet-18, batch 64, SGD lr 0.02 (momentum
0.9, weight decay 5e-4) divided by 10 at epochs 200 and 250 of 300; no clean
meta images (num_meta = 0). Each network's meta batches come from the other's
per-epoch GMM pseudo-clean set, and both train semi-supervised on the other's
labelled / unlabelled split (DivideMix's MixMatch step). DivideMix's CIFAR-10
values: 10 warm-up epochs, T = 0.5, alpha = 4, lambda_u = 25 (its choice at
50% symmetric noise; 0 at 20%, 50 at 90%), ramp-up over 16 epochs. Noise: 50%
symmetric. The rows of the supplement's Table 2 side by side:

  --config.method=dividemix                           (DivideMix)
  --config.method=mwnet                               (MW-Net + pseudo-clean)
  --config.cotrain.semi_supervised=False              (Alg. 2 without the semi-supervised part)
"""

from famus_jax.presets import _dividemix, cifar10


def get_config():
  c = cifar10.get_config()
  c.method = 'famus'
  c.meta_set = 'pseudo_clean'
  c.num_meta = 0
  c.model = 'preact_resnet18'
  c.noise_type = 'symmetric'
  c.noise_rate = 0.5
  c.batch_size = 64
  c.meta_batch_size = 64
  c.num_epochs = 300
  c.lr.base = 0.02
  c.lr.boundaries_epochs = (200, 250)
  c.cotrain.warmup_epochs = 10
  c.cotrain.semi_supervised = True
  c.cotrain.mixup_alpha = 4.0
  c.cotrain.lambda_u = _dividemix.lambda_u(c.dataset, c.noise_type, c.noise_rate)
  return c
