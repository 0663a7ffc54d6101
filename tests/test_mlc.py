"""MLC, meta loss correction, as the third meta-learning base (exact and with FaMUS).

Every value is checked against an independent computation: the corrected loss against numpy,
its logit error against `jax.grad` of the literal -log((softmax(z) T)_y), and the meta gradient
with respect to T (and to its logits Theta) against reverse-over-reverse autodiff through the
virtual step on the corrected loss itself (small CNN with BatchNorm, which couples the batch,
float32). FaMUS with every layer on must equal exact MLC, and a layer subset the reference with
the other layers' second-order path cut. The actual step ('recompute' and 'reuse') is checked
against `jax.grad` of the corrected loss pushed through the run's real optimiser.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from famus_jax import config as base_config
from famus_jax import config_check
from famus_jax.data import build_data
from famus_jax.errors import ConfigError
from famus_jax.famus import create_famus, layerwise
from famus_jax.meta import meta_gradient as mg
from famus_jax.method_registry import create_method
from famus_jax.methods import ExactEstimator, MetaReweighting, ReverseOverReverse, create_base
from famus_jax.methods import mlc
from famus_jax.methods.coefficient_space import LOGIT
from famus_jax.models import create_model, layer_names
from famus_jax.presets import cifar10_mlc, tiny
from famus_jax.train.step import make_context_fn
from famus_jax.train.trainer import Run, data_mesh
# One step's arrays and context as FaMUS's tests build them (small CNN with BatchNorm, 8x8).
from tests.test_famus import ALPHA, C, N, NAMES, make_ctx, rel_err
from tests.test_famus import data  # noqa: F401  pylint: disable=unused-import  (a fixture)


def literal_corrected_loss(logits, labels, t):
  """-log((softmax(z) T)_y) per example, written as the paper states it (no log-space)."""
  q = jax.nn.softmax(logits) @ t
  return -jnp.log(jnp.take_along_axis(q, labels[:, None], axis=1)[:, 0])


def mlc_config(**mlc_fields):
  c = ml_collections.ConfigDict()
  c.mlc = ml_collections.ConfigDict(dict(init_diagonal=0.8, lr=0.5, momentum=0.9,
                                         weight_decay=0.0))
  c.mlc.update(mlc_fields)
  c.meta = base_config.get_config().meta
  c.meta.actual_step = 'recompute'  # the papers' update
  c.meta.update_every = 1  # at every step
  return c


# ---- the corrected loss ----------------------------------------------------------------
def test_corrected_loss_and_its_logit_error_by_hand():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 4)) * 2
  labels = rng.integers(0, 4, 7)
  theta = rng.normal(size=(4, 4))
  t = np.exp(theta) / np.exp(theta).sum(1, keepdims=True)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  want = -np.log((p @ t)[np.arange(7), labels])
  z, y = jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32)

  @jax.jit
  def values(z, y, theta):
    log_t = mlc.log_transition(theta)
    autodiff = jax.grad(lambda zz: jnp.sum(literal_corrected_loss(zz, y, jnp.exp(log_t))))(z)
    eye = jnp.log(jnp.eye(4) + 1e-30)
    return (mlc.corrected_losses(z, y, log_t), mlc.corrected_errors(z, y, log_t), autodiff,
            mlc.corrected_errors(z, y, eye))

  losses, errors, autodiff, errors_eye = values(z, y, jnp.asarray(theta, jnp.float32))
  np.testing.assert_allclose(losses, want, rtol=1e-5)
  np.testing.assert_allclose(errors, autodiff, rtol=1e-4, atol=1e-6)
  # T = I is plain cross-entropy: the error is softmax - onehot.
  np.testing.assert_allclose(errors_eye, p - np.eye(4)[labels], atol=1e-6)
  # The initial T has the configured diagonal and rows on the simplex.
  t0 = np.exp(mlc.log_transition(mlc.initial_transition_logits(10, 0.9)))
  np.testing.assert_allclose(np.diag(t0), 0.9, rtol=1e-6)
  np.testing.assert_allclose(t0[0, 1:], 0.1 / 9, rtol=1e-5)
  np.testing.assert_allclose(t0.sum(1), 1.0, rtol=1e-6)


# ---- the meta gradient ------------------------------------------------------------------
@pytest.fixture(scope='module')
def arrays(data):  # pylint: disable=redefined-outer-name
  """FaMUS's step arrays and a transition matrix well away from the identity (every entry
  matters)."""
  rng = np.random.default_rng(1)
  return {**data, 'theta': jnp.asarray(rng.normal(size=(C, C)) + 2 * np.eye(C), jnp.float32)}


def reference_val(ctx, t, cut=()):
  """L^val(w - alpha grad_w mean_i -log((softmax(z_i(w)) T)_{y_i})): the second-order path.

  The corrected loss goes through the network's own forward pass (BatchNorm in training
  mode); layers in `cut` keep their virtual update but lose its derivative.
  """
  def train_loss(p):
    (logits, _), _ = ctx.apply_fn(p, ctx.batch_stats, ctx.images)
    return jnp.mean(literal_corrected_loss(logits, ctx.labels, t))

  grads = mg.flat_params(jax.grad(train_loss)(ctx.params))
  grads = {k: jax.lax.stop_gradient(g) if mg.layer_of(k) in cut else g for k, g in grads.items()}
  return ctx.val_loss_fn(mg.sgd_virtual_params(ctx.params, mg.unflat_params(grads), ALPHA))


def exact_method(cls=MetaReweighting):
  return cls('mlc', create_base('mlc', mlc_config()), ExactEstimator(), mlc_config().meta)


@pytest.fixture(scope='module')
def exact_outputs(arrays):
  """One compiled program: the exact MLC meta gradient, its references, and the update of the
  JVP path and of the reverse-over-reverse path (`config.meta_gradient`)."""
  method, slow = exact_method(), exact_method(ReverseOverReverse)
  state = method.init_state(jax.random.PRNGKey(6), arrays['params'], 0)

  def body(d):
    ctx = make_ctx(d)
    base_state = {'params': d['theta'], 'opt_state': method.base.tx.init(d['theta'])}
    c, pullback, w_hat, _ = method.virtual_step(ctx, base_state)
    d_c = method.estimator(ctx, w_hat, None, {}, None, space=LOGIT).d_eps
    inputs = method.base.batch_inputs(ctx)
    t = jnp.exp(mlc.log_transition(d['theta']))
    # The production meta gradient w.r.t. T itself: d_c pulled back through c(T) / n.
    _, t_pullback = jax.vjp(
        lambda tt: mlc.corrected_errors(inputs.logits, inputs.labels, jnp.log(tt)) / N, t)
    return {'d_c': d_c,
            'theta': pullback(d_c), 'theta_ref': jax.grad(
                lambda th: reference_val(ctx, jnp.exp(mlc.log_transition(th))))(d['theta']),
            't': t_pullback(d_c)[0], 't_ref': jax.grad(lambda tt: reference_val(ctx, tt))(t),
            'd_c_ref': mg.reference_coefficient_gradient(LOGIT.forward(ctx), ctx.val_loss_fn,
                                                         ctx.params, c, ALPHA),
            'fast': method.weights(ctx, state, None, None),
            'slow': slow.weights(ctx, state, None, None)}

  return jax.jit(body)(arrays), state


def test_meta_gradient_wrt_t_equals_reverse_over_reverse(exact_outputs):
  """dL^val/dT (and dL^val/dTheta, what the meta step applies) against reverse-over-reverse."""
  out, _ = exact_outputs
  assert out['d_c'].shape == (N, C)
  assert np.abs(np.asarray(out['t_ref'])).max() > 1e-5
  assert rel_err(out['t'], out['t_ref']) < 1e-5
  assert rel_err(out['theta'], out['theta_ref']) < 1e-5
  assert rel_err(out['d_c'], out['d_c_ref']) < 1e-5


def test_reverse_over_reverse_method_gives_the_same_update(exact_outputs):
  """config.meta_gradient='reverse_over_reverse' with MLC: same T' and actual cotangent."""
  out, state = exact_outputs
  out_fast, out_slow = out['fast'], out['slow']
  assert out_fast.weights is None and out_fast.logit_cotangent.shape == (N, C)
  assert rel_err(out_fast.logit_cotangent, out_slow.logit_cotangent) < 1e-5
  assert rel_err(out_fast.method_state['base']['params'],
                 out_slow.method_state['base']['params']) < 1e-6
  assert rel_err(out_fast.method_state['base']['params'], state['base']['params']) > 1e-7
  np.testing.assert_array_equal(out_fast.example_weights, np.ones(N))


def famus_mlc_config(**famus):
  c = base_config.get_config()
  c.method = 'famus'
  c.famus.base = 'mlc'
  c.famus.lambda_g = 0.0
  c.famus.floor_buckets = 'layer'
  c.famus.candidates = 'all'
  c.famus.exact_steps = 0  # the sampled estimate from the first step (the paper)
  c.meta.update_every = 1
  c.mlc.update(mlc_config().mlc)
  c.famus.update(famus)
  return c


def famus_estimate(method, ctx, theta, bucket=0):
  state = method.init_state(jax.random.PRNGKey(5), ctx.params, 0)
  base_state = {'params': theta, 'opt_state': method.base.tx.init(theta)}
  c, pullback, w_hat, train_grads = method.virtual_step(ctx, base_state)
  out = method.estimator.specialise(bucket, False)(
      ctx, w_hat, train_grads, state['estimator'], jax.random.PRNGKey(7), eps=c,
      pullback=pullback, space=method.base.space)
  return out, c, pullback


STATIC = 'stage1_block1_conv1,head'  # stage1_block1_bn1, between the two, is off
CUT = [n for n in NAMES if n not in STATIC.split(',')]


@pytest.fixture(scope='module')
def famus_outputs(arrays):
  """One compiled program: FaMUS-MLC with every layer, and with a fixed subset in each JVP
  mode, beside exact MLC and the references with the other layers' second-order path cut."""
  every = create_famus(famus_mlc_config(strategy='all'))
  subset = {jvp: create_famus(famus_mlc_config(strategy='static', static_layers=STATIC,
                                               jvp=jvp)) for jvp in layerwise.JVP_MODES}
  exact = exact_method()

  def body(d):
    ctx = make_ctx(d)
    out, c, pullback = famus_estimate(every, ctx, d['theta'])
    w_hat = exact.virtual_step(ctx, {'params': d['theta']})[2]
    d_exact = exact.estimator(ctx, w_hat, None, {}, None, space=LOGIT).d_eps
    res = {'d_c': out.d_eps, 'exact': d_exact, 'theta': pullback(out.d_eps),
           'theta_exact': pullback(d_exact), 'active': out.metrics['famus_num_active']}
    res['subset'] = {jvp: famus_estimate(m, ctx, d['theta'])[0].d_eps for jvp, m in subset.items()}
    res['ref'] = mg.reference_coefficient_gradient(LOGIT.forward(ctx), ctx.val_loss_fn,
                                                   ctx.params, c, ALPHA, cut_layers=CUT)
    # ... and through T: the cut reference on the corrected loss itself.
    t = jnp.exp(mlc.log_transition(d['theta']))
    _, t_pullback = jax.vjp(lambda tt: mlc.corrected_errors(
        ctx.logits, ctx.labels, jnp.log(tt)) / N, t)
    res['t'] = t_pullback(res['subset']['sparse'])[0]
    res['t_ref'] = jax.grad(lambda tt: reference_val(ctx, tt, CUT))(t)
    return res

  return jax.jit(body)(arrays)


def test_famus_with_every_layer_equals_exact_mlc(famus_outputs):
  out = famus_outputs
  assert int(out['active']) == len(NAMES)
  assert rel_err(out['d_c'], out['exact']) < 1e-5
  assert rel_err(out['theta'], out['theta_exact']) < 1e-5


def test_famus_layer_subset_cuts_the_other_layers_second_order_path(famus_outputs):
  """A fixed subset, in every JVP mode, equals the reference with the other layers cut."""
  out = famus_outputs
  assert rel_err(out['ref'], out['exact']) > 1e-3  # the subset is a different estimate
  for jvp in layerwise.JVP_MODES:
    assert rel_err(out['subset'][jvp], out['ref']) < 1e-5, jvp
  assert rel_err(out['t'], out['t_ref']) < 1e-5


# ---- the actual step in the training loop ------------------------------------------------
def make_run(method, actual_step, **famus):
  c = tiny.get_config()
  c.method = method
  c.meta.actual_step = actual_step
  c.lr.base = 0.5
  c.mlc.lr = 1000.0  # a large meta step, so that T and T' differ visibly
  c.mlc.init_diagonal = 0.5
  if method == 'famus':
    c.famus.base = 'mlc'
  c.famus.update(famus)
  run = Run(c, build_data(c), data_mesh())
  return run, run.init_state()


def expected_params(run, state, batch, theta):
  """Params after one real optimiser step on grad_w mean_i -log((softmax(z_i) T)_y), by jax.grad."""
  context = make_context_fn(run.model, True, run.lr_fn, run.config.augment, run.mean, run.std,
                            run.data.num_classes, run.config.meta_bn_train_mode)

  def params_after(state, batch, theta):
    ctx, _, _ = context(state, batch)
    t = jnp.exp(mlc.log_transition(theta))

    def loss(p):
      (logits, _), _ = ctx.apply_fn(p, ctx.batch_stats, ctx.images)
      return jnp.mean(literal_corrected_loss(logits, ctx.labels, t))

    grads = jax.grad(loss)(state.params)
    updates, _ = run.tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates)

  return jax.jit(params_after)(state, batch, theta)


@pytest.mark.parametrize('method,forms,famus', [
    ('mlc', ('recompute', 'reuse'), {}), ('famus', ('reuse',), {'strategy': 'block'})])
def test_actual_step_forms_against_autodiff(method, forms, famus):
  """'recompute' trains on the corrected loss with T', 'reuse' with T; nothing is re-weighted."""
  results = {}
  for form in forms:
    run, state = make_run(method, form, **famus)
    batch = run.batch(0)
    before = jax.device_get(state)  # the step donates `state`
    theta = before.method_state['base']['params']
    result = run.run_step(state, batch, None)
    theta_new = result.state.method_state['base']['params']
    assert rel_err(theta_new, theta) > 1e-4  # T moved
    want = expected_params(run, before, batch, theta_new if form == 'recompute' else theta)
    assert rel_err(result.state.params, want) < 2e-5, form
    np.testing.assert_array_equal(np.asarray(result.output.example_weights), 1.0)
    # The log gets T's new diagonal and the corrected loss at T'.
    metrics = jax.device_get(result.output.metrics)
    np.testing.assert_allclose(metrics['mlc_transition_diagonal'],
                               np.diag(np.exp(mlc.log_transition(theta_new))), rtol=1e-6)
    assert np.isfinite(metrics['mlc_corrected_loss'])
    results[form] = result.state.params
  if len(results) == 2:  # the two forms are different updates (a swap would be noticed)
    assert rel_err(results['reuse'], results['recompute']) > 1e-6


# ---- configuration ---------------------------------------------------------------------
def test_config_errors_name_the_field():
  c = base_config.get_config()
  c.method = 'mlc'
  config_check.validate(c)
  for field, value in [('init_diagonal', 1.0), ('init_diagonal', 0.0), ('lr', 0.0),
                       ('momentum', 1.0), ('weight_decay', -1.0)]:
    bad = base_config.get_config()
    bad.mlc[field] = value
    with pytest.raises(ConfigError, match=f'config.mlc.{field}'):
      config_check.validate(bad)
  bad = base_config.get_config()
  bad.famus.base = 'mcl'
  with pytest.raises(ConfigError, match="famus.base.*'mlc'"):
    config_check.validate(bad)
  bad = base_config.get_config()
  bad.method, bad.famus.base, bad.meta_set = 'famus', 'mlc', 'pseudo_clean'
  bad.cotrain.semi_supervised = True
  with pytest.raises(ConfigError, match='cotrain.semi_supervised'):
    config_check.validate(bad)
  assert create_method(c).base.space is LOGIT


def test_cifar10_mlc_preset_is_the_famus_supplement_setting():
  c = cifar10_mlc.get_config()
  config_check.validate(c)
  assert (c.method, c.model, c.depth, c.width, c.batch_size) == ('mlc', 'wide_resnet', 40, 2, 64)
  assert (c.optimizer.momentum, c.optimizer.weight_decay, c.mlc.lr) == (0.9, 5e-4, 1e-5)
  model = create_model(c, 10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)),
                                             train=False))
  names = layer_names(shapes['params'])
  assert sum(n.endswith('_conv1') for n in names) == 18  # 3 stages x 6 blocks: depth 40
  assert shapes['params']['head']['kernel'].shape == (128, 10)  # 64 * width 2
