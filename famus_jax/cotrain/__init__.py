"""Co-training pieces of DivideMix (Li, Socher & Hoi, ICLR 2020) / FaMUS supplement Algorithm 2.

Two networks train together; after every epoch each one's per-example losses
are split by a two-component Gaussian mixture into a pseudo-clean (labelled)
and a noisy (unlabelled) part that the OTHER network trains on.

- `division` (host, numpy): our own EM for the 1-D mixture with sklearn's
  GaussianMixture semantics and an exact 2-means initialisation, the clean
  probability, the division and its precision / recall diagnostics.
- `mixmatch` (device, jnp, jittable): sharpening, label refinement,
  co-guessing, batch MixUp, the semi-supervised loss with the uniform-prior
  penalty, and the linear ramp-up of its unlabelled weight.

- `pair` (host): the co-trained pair's state (`PairState`), its pseudo-clean
  sets and how each member's meta ids are drawn from the other member's set;
  `famus_jax/train/cotrain_run.py` drives it through the one training loop.
- `semi_supervised` (device): the mixed rows of DivideMix's MixMatch step,
  built inside the shared training step (`method='dividemix'`, or a meta
  method with `cotrain.semi_supervised=True`).
"""

from famus_jax.cotrain.division import (TwoGaussians, clean_probability, divide, division_stats,
                                        fit_two_gaussians, two_means_labels)
from famus_jax.cotrain.mixmatch import (Mixed, SemiLoss, co_guess, linear_rampup, mixup_batch,
                                        refine_labels, semi_supervised_loss, sharpen,
                                        uniform_prior_penalty)
