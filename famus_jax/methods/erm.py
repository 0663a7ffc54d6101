"""Uniform weights eps_i = 1/n: empirical risk minimisation, and DivideMix's step.

DivideMix (Li et al., ICLR 2020) is uniform weighting of its semi-supervised
batch: the co-trained pair (famus_jax/train/cotrain_run.py) builds the mixed
rows and their losses, and `DivideMix` weights them as ERM does.
"""

import jax.numpy as jnp

from famus_jax.methods.base import Method, WeightOutput


class ERM(Method):
  name = 'erm'
  uses_meta_set = False

  def weights(self, ctx, method_state, batch, rng):
    n = ctx.losses.shape[0]
    w = jnp.full((n,), 1.0 / n, jnp.float32)
    return WeightOutput(weights=w, method_state=method_state, metrics={},
                        example_weights=jnp.ones((n,), jnp.float32))


class DivideMix(ERM):
  """ERM's weights on the co-trained semi-supervised batch (config.method='dividemix')."""
  name = 'dividemix'
