"""Empirical risk minimisation: uniform weights eps_i = 1/n."""

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
