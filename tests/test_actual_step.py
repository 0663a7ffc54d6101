"""The actual update of the meta methods: `meta.actual_step` = 'recompute' or 'reuse'.

Both are checked against an independent computation: `jax.grad` of the
weighted per-example loss through the model (BatchNorm network, training
mode, the step's own augmentation), pushed through the run's real optimiser.
  recompute: weights eps(theta') of the meta model after its update (Eq. 5);
  reuse:     weights eps(theta) of the virtual step (its gradient, reused).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from famus_jax.data import build_data
from famus_jax.presets import tiny
from famus_jax.train.step import make_context_fn
from famus_jax.train.trainer import Run, data_mesh


def tree_rel_err(a, b):
  num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  den = sum(float(jnp.sum(y ** 2)) for y in jax.tree.leaves(b))
  return (num / den) ** 0.5


def make_run(method, actual_step, **famus):
  c = tiny.get_config()
  c.method = method
  c.meta.actual_step = actual_step
  c.lr.base = 0.5  # a large step, so that eps(theta) and eps(theta') differ visibly
  c.mwnet.lr = 10.0
  for key, value in famus.items():
    c.famus[key] = value
  run = Run(c, build_data(c), data_mesh())
  return run, run.init_state()


def expected_params(run, state, batch, theta):
  """Params after one real optimiser step on grad_w sum_i eps_i(theta) L_i(w), by jax.grad."""
  context = make_context_fn(run.model, True, run.lr_fn, run.config.augment, run.mean, run.std,
                            run.data.num_classes, run.config.meta_bn_train_mode)
  ctx, _, _ = context(state, batch)
  base = run.method.base
  eps = base._eps(theta, ctx.losses)  # pylint: disable=protected-access
  grads = jax.grad(lambda p: jnp.sum(eps * ctx.loss_vec_fn(p)))(state.params)
  updates, _ = run.tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), eps


@pytest.mark.parametrize('method,famus', [('mwnet', {}), ('famus', {'strategy': 'block'})])
def test_actual_step_forms_against_autodiff(method, famus):
  results = {}
  for form in ('recompute', 'reuse'):
    run, state = make_run(method, form, **famus)
    batch = run.batch(0)
    before = jax.device_get(state)  # the step donates `state`
    theta = before.method_state['base']['params']
    result = run.run_step(state, batch, None)
    new = result.state
    theta_new = new.method_state['base']['params']
    assert tree_rel_err(theta_new, theta) > 1e-4  # the meta model moved
    used = theta_new if form == 'recompute' else theta
    want, eps = expected_params(run, before, batch, used)
    assert tree_rel_err(new.params, want) < 2e-5, form
    np.testing.assert_allclose(np.asarray(result.output.example_weights),
                               np.asarray(eps) * eps.shape[0], rtol=1e-5)
    results[form] = new.params
  # The two forms are different updates (the test would notice a swap).
  assert tree_rel_err(results['reuse'], results['recompute']) > 1e-6


def test_l2r_has_one_form():
  run_a, state_a = make_run('l2r', 'recompute')
  run_b, state_b = make_run('l2r', 'reuse')
  a = run_a.run_step(state_a, run_a.batch(0), None).state
  b = run_b.run_step(state_b, run_b.batch(0), None).state
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('name', ['mwnet', 'mlc'])
def test_famus_meta_lr_scale_scales_its_bases_meta_optimiser(name):
  """config.famus.meta_lr_scale: FaMUS's meta model takes lr_scale times the unscaled update.

  From the config through `create_famus` to the base's optimiser: on a first update (momentum
  trace = the gradient) the step is -lr * scale * (g + wd * theta), so 3x the unscaled one.
  """
  from famus_jax.famus.method import create_famus  # pylint: disable=import-outside-toplevel
  updates = {}
  for scale in (1.0, 3.0):
    c = tiny.get_config()
    c.method, c.famus.base, c.famus.meta_lr_scale = 'famus', name, scale
    c[name].weight_decay = 1e-3  # the decay term scales with the learning rate too
    base = create_famus(c).base
    state = base.init(jax.random.key(0), {'head': {'bias': jnp.zeros((4,))}})
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), state['params'])
    updates[scale], _ = base.tx.update(grads, state['opt_state'], state['params'])
  for small, large in zip(jax.tree.leaves(updates[1.0]), jax.tree.leaves(updates[3.0])):
    np.testing.assert_allclose(np.asarray(large), 3.0 * np.asarray(small), rtol=1e-6)
    assert float(np.max(np.abs(small))) > 0
