"""Random weights: the control of learning to re-weight (Ren et al. 2018).

    eps_i = max(z_i, 0) / sum_k max(z_k, 0),   z_i ~ N(0, 1) drawn anew every step,

with L2R's rule when every weight is clipped to 0 (`config.l2r.zero_sum`).
The weights are as sparse as L2R's (about half the batch gets 0) but carry
no information about the examples: a method whose accuracy this control
matches gains from sparse, noisy batches, not from its weights. The public
L2R code has the same control (`--random_weight`). No meta set, no meta
gradient, no state; the cost of a step is ERM's.
"""

import jax
import jax.numpy as jnp

from famus_jax.methods.base import Method, WeightOutput
from famus_jax.methods.bases import normalise_by_sum


class RandomWeight(Method):
  """eps_i = max(z_i, 0) / sum_k max(z_k, 0), z ~ N(0, I_n) per step (module docstring)."""
  name = 'random_weight'
  uses_meta_set = False

  def __init__(self, zero_sum: str):
    self.zero_sum = zero_sum  # 'uniform' | 'zero', as config.l2r.zero_sum

  def weights(self, ctx, method_state, batch, rng):
    del batch
    n = ctx.losses.shape[0]
    raw = jnp.maximum(jax.random.normal(rng, (n,), jnp.float32), 0.0)
    fallback = jnp.full((n,), 1.0 / n) if self.zero_sum == 'uniform' else jnp.zeros((n,))
    weights = normalise_by_sum(raw, fallback)
    return WeightOutput(weights=weights, method_state=method_state,
                        metrics={'zero_weight_fraction': jnp.mean(raw <= 0)},
                        example_weights=weights * n)


def create_random_weight(config) -> RandomWeight:
  """The method `config.method = 'random_weight'` selects."""
  return RandomWeight(config.l2r.zero_sum)
