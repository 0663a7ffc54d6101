"""The production meta gradient equals reverse-over-reverse autodiff.

Small CNN with BatchNorm (batch statistics couple the examples), float32.
The reference differentiates through the virtual step with `jax.grad`, as the
reference PyTorch code does with create_graph=True.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from famus_jax import config as base_config
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods import ExactEstimator, MetaReweighting, ReverseOverReverse, create_base
from famus_jax.models import SmallCNN
from famus_jax.train.state import TrainState
from famus_jax.train.step import build_context

N, M, C = 12, 10, 5
ALPHA = 0.1


def rel_err(a, b):
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def tree_rel_err(a, b):
  fa = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)])
  fb = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)])
  return rel_err(fa, fb)


@pytest.fixture(scope='module')
def setup():
  model = SmallCNN(C, width=4)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(N, 8, 8, 3)), jnp.float32)
  meta_images = jnp.asarray(rng.normal(size=(M, 8, 8, 3)), jnp.float32)
  batch = {'label': jnp.asarray(rng.integers(0, C, N), jnp.int32),
           'index': jnp.arange(N, dtype=jnp.int32),
           'meta_label': jnp.asarray(rng.integers(0, C, M), jnp.int32)}
  variables = model.init(jax.random.PRNGKey(1), images, train=False)
  # Move away from the init so that BatchNorm scales/biases are not trivial.
  params = jax.tree.map(lambda p: p + 0.05 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                        variables['params'])
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables['batch_stats'], opt_state=None, method_state=None,
                     rng=jax.random.PRNGKey(2))
  ctx, _ = build_context(model, state, batch, images, meta_images, jnp.float32(ALPHA),
                         jax.random.PRNGKey(3), C)
  return ctx


def meta_config():
  c = ml_collections.ConfigDict()
  c.mwnet = ml_collections.ConfigDict(dict(hidden=16, lr=1e-3, momentum=0.9,
                                           weight_decay=1e-4, normalize=True))
  c.l2r = ml_collections.ConfigDict(dict(zero_sum='uniform'))
  c.meta = base_config.get_config().meta
  c.meta.actual_step = 'recompute'  # the papers' update
  c.meta.update_every = 1  # at every step
  return c


def test_coefficient_gradient_matches_reverse_over_reverse(setup):
  ctx = setup
  eps = jnp.asarray(np.random.default_rng(4).uniform(0.02, 0.15, N), jnp.float32)
  train_grads = ctx.train_vjp(eps)
  w_hat = mg.sgd_virtual_params(ctx.params, train_grads, ALPHA)
  val_grad = jax.grad(ctx.val_loss_fn)(w_hat)
  via_jvp = mg.coefficient_gradient(ctx.loss_vec_fn, ctx.params,
                                    mg.flat_params(val_grad), ALPHA)
  via_linearisation = -ALPHA * ctx.train_jvp(val_grad)
  reference = mg.reference_coefficient_gradient(ctx.loss_vec_fn, ctx.val_loss_fn,
                                                ctx.params, eps, ALPHA)
  assert np.abs(np.asarray(reference)).max() > 1e-6
  assert rel_err(via_jvp, reference) < 1e-5
  assert rel_err(via_linearisation, reference) < 1e-5


@pytest.mark.parametrize('base_name', ['mwnet', 'l2r'])
def test_method_meta_gradient_matches_reference(setup, base_name):
  """The meta gradient the method applies equals jax.grad through the virtual step."""
  ctx = setup
  method = MetaReweighting(base_name, create_base(base_name, meta_config()), ExactEstimator(),
                           meta_config().meta)
  state = method.init_state(jax.random.PRNGKey(5), ctx.params, 0)
  eps, pullback, w_hat, _ = method.virtual_step(ctx, state['base'])
  d_eps = method.estimator(ctx, w_hat, None, state['estimator'], None).d_eps
  production = pullback(d_eps)

  def val_after_virtual_step(meta_params):
    if base_name == 'mwnet':
      e = method.base._eps(meta_params, ctx.losses)
    else:
      e = meta_params
    grads = jax.grad(lambda p: jnp.sum(e * ctx.loss_vec_fn(p)))(ctx.params)
    return ctx.val_loss_fn(mg.sgd_virtual_params(ctx.params, grads, ALPHA))

  meta_params = state['base']['params'] if base_name == 'mwnet' else eps
  reference = jax.grad(val_after_virtual_step)(meta_params)
  assert tree_rel_err(production, reference) < 1e-5
  # The weights that reach the actual step are normalised and non-negative.
  weights, _, _ = method.base.update(state['base'], ctx.losses, d_eps, pullback)
  assert np.all(np.asarray(weights) >= 0)
  np.testing.assert_allclose(np.sum(weights), 1.0, rtol=1e-5)


def test_per_layer_contributions_sum_to_total(setup):
  ctx = setup
  val_grad = mg.flat_params(jax.grad(ctx.val_loss_fn)(ctx.params))
  total = mg.coefficient_gradient(ctx.loss_vec_fn, ctx.params, val_grad, ALPHA)
  parts = mg.per_layer_coefficient_gradients(ctx.loss_vec_fn, ctx.params, val_grad, ALPHA)
  assert list(parts) == ['stem_conv', 'stem_bn', 'stage1_block1_conv1', 'stage1_block1_bn1',
                         'head'] or set(parts) == {'stem_conv', 'stem_bn', 'stage1_block1_conv1',
                                                   'stage1_block1_bn1', 'head'}
  assert rel_err(sum(parts.values()), total) < 1e-5
  # Each layer contributes something: no layer is silently dropped.
  assert all(np.abs(np.asarray(v)).max() > 0 for v in parts.values())


def test_restricted_subset_equals_reference_with_cut_layers(setup):
  """Only layers in S keep their second-order path (the FaMUS gating semantics)."""
  ctx = setup
  eps = jnp.full((N,), 1.0 / N, jnp.float32)
  active = ['stage1_block1_bn1', 'head']
  w_hat = mg.sgd_virtual_params(ctx.params, ctx.train_vjp(eps), ALPHA)
  _, val_grad = mg.restricted_value_and_grad(ctx.val_loss_fn, w_hat, active)
  production = mg.coefficient_gradient(ctx.loss_vec_fn, ctx.params, val_grad, ALPHA)
  cut = [l for l in {mg.layer_of(k) for k in mg.flat_params(ctx.params)} if l not in active]
  reference = mg.reference_coefficient_gradient(ctx.loss_vec_fn, ctx.val_loss_fn, ctx.params,
                                                eps, ALPHA, cut_layers=cut)
  assert rel_err(production, reference) < 1e-5
  full = mg.reference_coefficient_gradient(ctx.loss_vec_fn, ctx.val_loss_fn, ctx.params,
                                           eps, ALPHA)
  assert rel_err(production, full) > 1e-3  # the subset is a different estimate


@pytest.mark.parametrize('base_name', ['mwnet', 'l2r'])
def test_reverse_over_reverse_method_gives_the_same_weights(setup, base_name):
  """config.meta_gradient='reverse_over_reverse' is the same method, computed the slow way."""
  ctx = setup
  base = create_base(base_name, meta_config())
  fast = MetaReweighting(base_name, base, ExactEstimator(), meta_config().meta)
  slow = ReverseOverReverse(base_name, base, ExactEstimator(), meta_config().meta)
  state = fast.init_state(jax.random.PRNGKey(6), ctx.params, 0)
  out_fast = fast.weights(ctx, state, None, None)
  out_slow = slow.weights(ctx, state, None, None)
  assert rel_err(out_fast.weights, out_slow.weights) < 1e-5
  if base_name == 'mwnet':  # L2R keeps no meta parameters
    assert tree_rel_err(out_fast.method_state['base'], out_slow.method_state['base']) < 1e-5
