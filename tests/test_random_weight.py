"""L2R's random-weight control (config.method='random_weight').

w = max(z, 0) / sum max(z, 0), z ~ N(0, I) per step: checked against the
half-normal distribution it implies and against the losses it must ignore.
"""

import jax
import jax.numpy as jnp
import numpy as np

from famus_jax.methods.base import StepContext
from famus_jax.methods.random_weight import RandomWeight, create_random_weight
from famus_jax.presets import tiny
from famus_jax.train.trainer import train_and_evaluate


def context(losses):
  """A StepContext holding only the losses (the one field the method may read)."""
  fields = {f: None for f in StepContext.__dataclass_fields__}
  fields.update(losses=losses, num_classes=10)
  return StepContext(**fields)


def test_weights_are_normalised_half_normal_draws_independent_of_the_losses():
  method = RandomWeight('uniform')
  n, draws = 64, 400
  rng = np.random.default_rng(0)
  losses = jnp.asarray(rng.exponential(size=n), jnp.float32)
  zero, ratios, corr = [], [], []
  for k in range(draws):
    out = method.weights(context(losses), {}, None, jax.random.PRNGKey(k))
    w = np.asarray(out.weights, np.float64)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-5
    np.testing.assert_allclose(out.example_weights, w * n, rtol=1e-6)
    zero.append(np.mean(w == 0))
    positive = w[w > 0]
    # Half-normal: E[X^2] / E[X]^2 = (1) / (2 / pi) = pi / 2 for X = |z|.
    ratios.append(np.mean(positive ** 2) / np.mean(positive) ** 2)
    corr.append(np.corrcoef(w, np.asarray(losses))[0, 1])
    assert abs(float(out.metrics['zero_weight_fraction']) - zero[-1]) < 1e-9
  assert abs(np.mean(zero) - 0.5) < 0.01
  assert abs(np.mean(ratios) - np.pi / 2) < 0.05
  assert abs(np.mean(corr)) < 0.02   # the weights know nothing of the losses


def test_all_clipped_follows_l2r_zero_sum():
  losses = jnp.ones((1,), jnp.float32)
  keys = [k for k in range(40)
          if float(jax.random.normal(jax.random.PRNGKey(k), (1,))[0]) <= 0]
  assert keys
  key = jax.random.PRNGKey(keys[0])
  uniform = RandomWeight('uniform').weights(context(losses), {}, None, key)
  zero = RandomWeight('zero').weights(context(losses), {}, None, key)
  np.testing.assert_array_equal(uniform.weights, [1.0])
  np.testing.assert_array_equal(zero.weights, [0.0])


def test_a_short_run_trains(tmp_path):
  c = tiny.get_config()
  c.method = 'random_weight'
  c.num_meta = 0
  summary = train_and_evaluate(c, str(tmp_path / 'run'))
  assert summary['method'] == 'random_weight' and summary['steps'] == c.num_steps
  assert create_random_weight(c).zero_sum == c.l2r.zero_sum
