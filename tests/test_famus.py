"""FaMUS: layer-wise meta gradient, samplers, objective, variant dispatch, checkpoints.

Values are checked against reverse-over-reverse autodiff through the virtual
step (`reference_coefficient_gradient`, the reference code's way), on a small
CNN with BatchNorm (which couples the batch), 8x8 inputs; every check runs
as one compiled program. The loop-level tests use the tiny config.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from famus_jax import config as base_config
from famus_jax.presets import tiny
from famus_jax.data import build_data
from famus_jax.errors import ConfigError
from famus_jax.famus import create_famus, layer_sets, layerwise, objective
from famus_jax.famus import samplers as sm
from famus_jax.famus.estimator import DispatchRecord
from famus_jax.meta import meta_gradient as mg
from famus_jax.models import ResNetCifar, SmallCNN, avg_pool_gradient, layer_names
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.logbook import read_metrics
from famus_jax.train.state import TrainState
from famus_jax.train.step import build_context
from famus_jax.train.trainer import Run, data_mesh, train_and_evaluate

N, M, C = 12, 10, 5
ALPHA = 0.1
MODEL = SmallCNN(C, width=4)
NAMES = ['stem_conv', 'stem_bn', 'stage1_block1_conv1', 'stage1_block1_bn1', 'head']
# A non-contiguous active set: stage1_block1_bn1, between its floor and the head, is off.
STATIC = 'stage1_block1_conv1,head'
NEEDED = 2  # with floor_buckets='layer': the bucket of stage1_block1_conv1


def rel_err(a, b):
  fa = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]).astype(np.float64)
  fb = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)]).astype(np.float64)
  return np.linalg.norm(fa - fb) / np.linalg.norm(fb)


def famus_config(**famus):
  c = base_config.get_config()
  c.method = 'famus'
  c.mwnet.hidden = 16
  c.famus.lambda_g = 0.0
  c.famus.floor_buckets = 'layer'
  c.famus.candidates = 'all'
  c.famus.exact_steps = 0  # the sampled estimate from the first step (the paper)
  c.meta.update_every = 1
  for k, v in famus.items():
    c.famus[k] = v
  return c


@pytest.fixture(scope='module')
def data():
  """Arrays of one step (small CNN with BatchNorm, 8x8 inputs), params moved off init."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(N, 8, 8, 3)), jnp.float32)
  variables = MODEL.init(jax.random.PRNGKey(1), images, train=False)
  params = jax.tree.map(lambda p: p + 0.05 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                        variables['params'])
  assert layer_names(params) == NAMES
  return {'params': params, 'batch_stats': variables['batch_stats'], 'images': images,
          'meta_images': jnp.asarray(rng.normal(size=(M, 8, 8, 3)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, C, N), jnp.int32),
          'meta_label': jnp.asarray(rng.integers(0, C, M), jnp.int32),
          'step': jnp.zeros((), jnp.int32)}


def make_ctx(d):
  state = TrainState(step=d['step'], params=d['params'], batch_stats=d['batch_stats'],
                     opt_state=None, method_state=None, rng=jax.random.PRNGKey(2))
  batch = {'label': d['label'], 'index': jnp.arange(N, dtype=jnp.int32),
           'meta_label': d['meta_label']}
  ctx, _ = build_context(MODEL, state, batch, d['images'], d['meta_images'], jnp.float32(ALPHA),
                         jax.random.PRNGKey(3), C)
  return ctx


def in_step(d, fn):
  """fn(ctx) -> arrays, compiled as one program (the context is built inside)."""
  return jax.jit(lambda dd: fn(make_ctx(dd)))(d)


def new_method(d, **famus):
  method = create_famus(famus_config(**famus))
  return method, method.init_state(jax.random.PRNGKey(5), d['params'], 0)


def estimate(method, state, ctx, bucket=0, diagnostics=False, rng=jax.random.PRNGKey(7)):
  """(d_eps, estimator state, metrics + {'dispatch': record}, eps, pullback, w_hat) of one call."""
  eps, pullback, w_hat, train_grads = method.virtual_step(ctx, state['base'])
  est = method.estimator.specialise(bucket, diagnostics)
  identity = method.base.virtual_is_identity
  out = est(ctx, w_hat, train_grads, state['estimator'], rng, eps=None if identity else eps,
            pullback=None if identity else pullback)
  return out.d_eps, out.state, {**out.metrics, 'dispatch': out.dispatch}, eps, pullback, w_hat


def reference(ctx, eps, cut=()):
  return mg.reference_coefficient_gradient(ctx.loss_vec_fn, ctx.val_loss_fn, ctx.params, eps,
                                           ALPHA, cut_layers=cut)


# ---- layer bookkeeping ---------------------------------------------------------
def test_layer_sets_presets_buckets_and_blocks():
  shapes = jax.eval_shape(lambda: ResNetCifar(C, depth=8).init(
      jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)), train=False))
  names = layer_names(shapes['params'])
  ref = layer_sets.build_layer_sets(names, 'reference', '', 'block')
  assert ref.candidates == tuple(n for n in names if n.startswith('stage3_'))
  assert ref.always_on == ('head',)
  every = layer_sets.build_layer_sets(names, 'all', '', 'block')
  assert every.candidates == tuple(names) and every.always_on == ()
  assert [names[f] for f in every.bucket_floors] == [
      'stem_conv', 'stage1_block1_conv1', 'stage2_block1_conv1', 'stage3_block1_conv1', 'head']
  by_stage = layer_sets.build_layer_sets(names, 'stage3_.*', 'head', 'stage')
  assert len(by_stage.bucket_floors) == 5 and by_stage.always_on == ('head',)
  assert every.bucket_of_layers(['stage2_block1_bn2', 'head']) == 2
  assert every.bucket_of_layers([]) == 4
  assert layer_sets.block_layers(names, -1) == [n for n in names if n.startswith('stage3_block1')]
  with pytest.raises(ConfigError, match='famus.candidates'):
    layer_sets.build_layer_sets(names, 'stage9_.*', '', 'block')


# ---- the layer-wise meta gradient ---------------------------------------------
@pytest.mark.parametrize('base', ['mwnet', 'l2r'])
def test_all_layers_equal_the_exact_meta_gradient(data, base):
  """S = every layer: d_eps (and the meta-model gradient) equal reverse-over-reverse."""
  method, state = new_method(data, base=base, strategy='all')

  def body(ctx):
    d_eps, _, metrics, eps, pullback, _ = estimate(method, state, ctx)
    out = {'d_eps': d_eps, 'ref': reference(ctx, eps), 'active': metrics['famus_num_active']}
    if base == 'mwnet':
      def val_after_virtual_step(theta):
        e = method.base._eps(theta, ctx.losses)  # pylint: disable=protected-access
        grads = jax.grad(lambda p: jnp.sum(e * ctx.loss_vec_fn(p)))(ctx.params)
        return ctx.val_loss_fn(mg.sgd_virtual_params(ctx.params, grads, ALPHA))
      out['theta'] = pullback(d_eps)
      out['theta_ref'] = jax.grad(val_after_virtual_step)(state['base']['params'])
    return out

  out = in_step(data, body)
  assert np.abs(np.asarray(out['ref'])).max() > 1e-6
  assert rel_err(out['d_eps'], out['ref']) < 1e-5
  assert int(out['active']) == len(NAMES)
  if base == 'mwnet':
    assert rel_err(out['theta'], out['theta_ref']) < 1e-5


def test_exact_steps_use_every_layer_then_the_sampled_ones(data):
  """config.famus.exact_steps = 3: steps 0-2 estimate with every layer (= reverse-over-reverse),
  step 3 with the samplers' draw."""
  method, state = new_method(data, exact_steps=3)

  def body(ctx):
    d_eps, _, metrics, eps, _, _ = estimate(method, state, ctx)
    return {'d_eps': d_eps, 'ref': reference(ctx, eps), 'active': metrics['famus_num_active'],
            'sampled': metrics['famus_num_sampled'], 'bucket': metrics['dispatch'].bucket_needed}

  for step in (0, 2, 3):
    out = in_step({**data, 'step': jnp.int32(step)}, body)
    if step < 3:
      assert rel_err(out['d_eps'], out['ref']) < 1e-5, step
      assert int(out['active']) == len(NAMES) and int(out['bucket']) == 0
    else:
      assert int(out['active']) < len(NAMES)
      assert int(out['active']) == int(out['sampled']) + len(method.estimator.layer_sets(
          data['params']).always_on)
      assert rel_err(out['d_eps'], out['ref']) > 1e-3


@pytest.mark.parametrize('jvp', ['sparse', 'restricted', 'linearized'])
def test_fixed_mask_equals_reference_code_semantics(data, jvp):
  """Full virtual step in value, second-order path cut (stop_gradient) on layers off.

  Every variant whose floor covers the set gives the same numbers; a variant
  above the needed floor says so (it would drop a layer).
  """
  method, state = new_method(data, strategy='static', static_layers=STATIC, jvp=jvp)
  cut = [n for n in NAMES if n not in STATIC.split(',')]

  def body(ctx):
    runs = [estimate(method, state, ctx, bucket) for bucket in range(NEEDED + 2)]
    eps = runs[0][3]
    return {'d_eps': [r[0] for r in runs],
            'needed': [r[2]['dispatch'].bucket_needed for r in runs],
            'ran': [r[2]['dispatch'].bucket_run for r in runs],
            'ref': reference(ctx, eps, cut), 'full': reference(ctx, eps)}

  out = in_step(data, body)
  assert rel_err(out['ref'], out['full']) > 1e-3  # the subset is a different estimate
  assert [int(x) for x in out['needed']] == [NEEDED] * (NEEDED + 2)
  assert [int(x) for x in out['ran']] == list(range(NEEDED + 2))
  for bucket in range(NEEDED + 1):
    assert rel_err(out['d_eps'][bucket], out['ref']) < 1e-5, bucket
  assert rel_err(out['d_eps'][NEEDED + 1], out['ref']) > 1e-3


def test_sparse_jvp_equals_the_dense_one(data):
  tangent_layers = ['stage1_block1_bn1', 'head']

  def body(ctx):
    flat = mg.flat_params(jax.tree.map(lambda p: 0.3 * jnp.cos(p), ctx.params))
    tangent = {k: v for k, v in flat.items() if mg.layer_of(k) in tangent_layers}
    return {mode: layerwise.directional(ctx, tangent, mode) for mode in layerwise.JVP_MODES}

  out = in_step(data, body)
  assert np.abs(np.asarray(out['linearized'])).max() > 1e-4
  np.testing.assert_allclose(out['sparse'], out['linearized'], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out['restricted'], out['linearized'], rtol=1e-4, atol=1e-6)


def test_per_layer_contributions_sum_to_the_total(data):
  method, state = new_method(data)
  subset = ['stem_bn', 'stage1_block1_bn1', 'head']

  def body(ctx):
    w_hat = method.virtual_step(ctx, state['base'])[2]
    return {'parts': layerwise.per_layer_contributions(ctx, w_hat),
            'total': layerwise.layerwise_coefficient_gradient(ctx, w_hat, NAMES),
            'subset': layerwise.layerwise_coefficient_gradient(ctx, w_hat, subset)}

  out = in_step(data, body)
  parts = out['parts']
  assert set(parts) == set(NAMES)
  assert rel_err(sum(parts.values()), out['total']) < 1e-5
  assert all(np.abs(np.asarray(v)).max() > 0 for v in parts.values())
  assert rel_err(out['subset'], sum(parts[n] for n in subset)) < 1e-5


# ---- samplers and the objective -------------------------------------------------
def test_lc_signal_is_each_active_layers_share_of_the_estimate(data):
  """dL_c~/dr_l = -<g_hat, g_l>/||g_hat||^2 for active layers, 0 for the others.

  Checked against per-layer meta gradients g_l = pullback(layer-l part of
  d_eps); with lambda1 = 0 the samplers still get a finite, non-zero gradient
  (from L_c alone) and move.
  """
  method, state = new_method(data, lambda_r=0.0, candidates='all')

  def body(ctx):
    d_eps, est_state, metrics, _, pullback, w_hat = estimate(method, state, ctx)
    parts = layerwise.per_layer_contributions(ctx, w_hat)
    return {'d_eps': d_eps, 'metrics': metrics, 'samplers': est_state['samplers'],
            'parts': parts, 'g_hat': pullback(d_eps),
            'g_l': {n: pullback(v) for n, v in parts.items()}}

  out = in_step(data, body)
  metrics = out['metrics']
  r = np.asarray(metrics['famus_active'])
  assert set(np.unique(r)) <= {0.0, 1.0} and 0 < r.sum() < len(r)
  active = [n for n, a in zip(NAMES, r) if a == 1.0]
  assert rel_err(out['d_eps'], sum(out['parts'][n] for n in active)) < 1e-5
  dot = lambda a, b: sum(float(np.vdot(x, y)) for x, y in zip(  # pylint: disable=g-long-lambda
      jax.tree.leaves(a), jax.tree.leaves(b)))
  norm2 = dot(out['g_hat'], out['g_hat'])
  expected = np.array([-dot(out['g_hat'], out['g_l'][n]) / norm2 if a == 1.0 else 0.0
                       for n, a in zip(NAMES, r)])
  signal = np.asarray(metrics['famus_lc_signal'])
  np.testing.assert_allclose(signal, expected, rtol=1e-3, atol=1e-6)
  assert signal.sum() == pytest.approx(-1.0, abs=1e-4)
  assert np.isfinite(float(metrics['famus_sampler_grad_norm']))
  assert float(metrics['famus_sampler_grad_norm']) > 0
  assert rel_err(out['samplers'], state['estimator']['samplers']) > 1e-6


def test_reference_gate_gives_the_samplers_no_gradient(data):
  """Why r must enter the objective elsewhere: with the reference code's gate
  w_hat_l = w_l - alpha (r_l g_l + (1 - r_l) stop_gradient(g_l)), dL^val/dr = 0."""
  def body(ctx):
    n = ctx.losses.shape[0]
    grads = mg.flat_params(ctx.train_vjp(jnp.full((n,), 1.0 / n)))

    def val_of_r(r):
      gated = {k: r[NAMES.index(mg.layer_of(k))] * g
               + (1 - r[NAMES.index(mg.layer_of(k))]) * jax.lax.stop_gradient(g)
               for k, g in grads.items()}
      return ctx.val_loss_fn(mg.sgd_virtual_params(ctx.params, mg.unflat_params(gated), ALPHA))
    return jax.grad(val_of_r)(jnp.asarray([1.0, 0.0, 1.0, 0.0, 1.0]))

  np.testing.assert_array_equal(in_step(data, body), np.zeros(len(NAMES)))


def test_selection_loss_pulls_the_number_of_active_layers_to_k():
  """L_r alone, fixed inputs, fresh Gumbel noise: sum r drifts from ~L/2 to ~K."""
  num, width, k = 12, 6, 3.0
  rng = np.random.default_rng(0)
  sizes = [int(s) for s in rng.integers(2, width + 1, num)]
  x, mask = sm.pack_inputs([jnp.asarray(rng.normal(size=s), jnp.float32) for s in sizes], width)
  x = sm.standardize(x, mask)
  params = sm.init_samplers(jax.random.PRNGKey(0), sizes, 16, 2, p_on=0.5)
  tx = optax.sgd(0.1, momentum=0.9)

  def step(carry, key):
    p, opt = carry
    noise = sm.gumbel_noise(key, (num, 2))

    def loss(q):
      r, _ = sm.sample(q, x, noise, 5.0)
      return 0.1 * objective.selection_loss(jnp.sum(r), k)
    r, _ = sm.sample(p, x, noise, 5.0)
    grads = jax.grad(loss)(p)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), jnp.sum(r)

  _, counts = jax.jit(lambda p, keys: jax.lax.scan(step, (p, tx.init(p)), keys))(
      params, jax.random.split(jax.random.PRNGKey(1), 400))
  counts = np.asarray(counts)
  start = float(jnp.sum(sm.sample(params, x, jnp.zeros((num, 2)), 5.0)[1]))
  assert start == pytest.approx(num / 2, abs=1.5)  # p_on = 1/2 at init
  assert abs(counts[-100:].mean() - k) < 0.75


def test_gradient_matching_loss_closed_form(data):
  """The closed form's training and validation head gradients equal autodiff's, and
  lambda2 * dL_g/d eps reaches the meta model's update."""
  method, state = new_method(data, strategy='all')
  with_lg, _ = new_method(data, strategy='all', lambda_g=0.5)

  def body(ctx):
    eps, _, w_hat, train_grads = method.virtual_step(ctx, state['base'])
    _, aux = ctx.val_outputs_fn(w_hat)
    v_head = jax.grad(ctx.val_loss_fn)(w_hat)['head']
    lg = lambda e, form='avgpool': objective.gradient_matching_loss(  # pylint: disable=g-long-lambda
        e, ctx.features, ctx.errors, ctx.params['head'], ALPHA, form,
        val_features=aux['features'], val_labels=aux['labels'])
    d0, _, _, _, _, _ = estimate(method, state, ctx)
    d1, _, m1, _, _, _ = estimate(with_lg, state, ctx)
    tra = mg.head_gradient(ctx.features, ctx.errors, eps)
    return {'tra': (tra['kernel'], tra['bias']),
            'tra_ref': avg_pool_gradient(train_grads['head']),
            'val': objective.head_val_gradient(w_hat['head']['kernel'], w_hat['head']['bias'],
                                               aux['features'], aux['labels']),
            'val_ref': v_head, 'value': lg(eps),
            'value_ref': jnp.sum((avg_pool_gradient(train_grads['head'])
                                  - avg_pool_gradient(v_head)) ** 2),
            'grads': {form: jax.grad(lambda e, f=form: lg(e, f))(eps)
                      for form in objective.LG_FORMS},
            'diff': d1 - d0, 'reported': m1['famus_L_g']}

  out = in_step(data, body)
  k_tra, b_tra = out['tra']
  np.testing.assert_allclose(jnp.concatenate([jnp.mean(k_tra, 0), b_tra]), out['tra_ref'],
                             rtol=1e-4, atol=1e-7)
  assert rel_err(out['val'], (out['val_ref']['kernel'], out['val_ref']['bias'])) < 1e-4
  assert float(out['value']) == pytest.approx(float(out['value_ref']), rel=1e-3)
  for grad in out['grads'].values():
    assert np.all(np.isfinite(grad)) and np.abs(np.asarray(grad)).max() > 0
  assert rel_err(out['diff'], 0.5 * out['grads']['avgpool']) < 1e-4
  assert float(out['reported']) == pytest.approx(float(out['value']), rel=1e-4)


def test_diagnostics_compare_with_the_exact_gradient(data):
  for strategy, exact in [('all', True), ('static', False)]:
    c = famus_config(strategy=strategy, static_layers=STATIC)
    c.diagnostics_every = 1
    method = create_famus(c)
    state = method.init_state(jax.random.PRNGKey(5), data['params'], 0)
    out = in_step(data, lambda ctx, m=method, s=state: estimate(m, s, ctx, diagnostics=True)[1:3])
    new_state, metrics = out
    cosine, err = float(metrics['famus_diag_cosine'][0]), float(metrics['famus_diag_rel_err'][0])
    if exact:
      assert cosine == pytest.approx(1.0, abs=1e-5) and err < 1e-4
    else:
      # A different estimate: in eps space clearly; in theta space (the meta model has
      # few parameters) mostly by its length.
      assert float(metrics['famus_diag_eps_cosine'][0]) < 0.999 and err > 1e-3
      assert -1.0 - 1e-6 <= cosine <= 1.0 + 1e-6  # float32 rounding of a near-parallel pair
    assert int(new_state['diag']['step']) == 0


def test_random_strategy_predicts_the_next_steps_bucket(data):
  method, state = new_method(data, strategy='random', num_random=2)
  run = jax.jit(lambda d: estimate(method, state, make_ctx(d))[2])
  seen = set()
  for step in range(5):
    now = run({**data, 'step': jnp.int32(step)})
    after = run({**data, 'step': jnp.int32(step + 1)})
    assert int(now['dispatch'].next_bucket) == int(after['dispatch'].bucket_needed)
    assert float(now['famus_num_sampled']) == 2.0
    seen.add(tuple(np.asarray(now['famus_active'])))
  assert len(seen) > 1


def test_config_errors_name_the_field(data):
  with pytest.raises(ConfigError, match='famus.strategy'):
    create_famus(famus_config(strategy='sometimes'))
  with pytest.raises(ConfigError, match='famus.sampler_depth'):
    create_famus(famus_config(sampler_depth=1))
  method = create_famus(famus_config(strategy='static', static_layers='nothing_.*'))
  with pytest.raises(ConfigError, match='famus.static_layers'):
    method.init_state(jax.random.PRNGKey(0), data['params'], 0)


# ---- the training loop: dispatch, checkpoints, end to end -------------------------------
def tiny_famus(**famus):
  c = tiny.get_config()
  c.method = 'famus'
  c.famus.candidates = 'all'
  c.famus.exact_steps = 0  # the sampled estimate from the first step (the paper)
  c.meta.update_every = 1
  for k, v in famus.items():
    c.famus[k] = v
  return c


@pytest.fixture(scope='module')
def tiny_run():
  """A small-CNN run whose samplers always switch stem_bn on (needed bucket 0)."""
  config = tiny_famus(floor_buckets='block')
  config.diagnostics_every = 1000  # the state carries the diagnostics; none are due here
  run = Run(config, build_data(config), data_mesh())
  state = run.init_state()
  est = state.method_state['estimator']
  names = list(run.method.estimator.cached_layer_sets.candidates)
  bias = np.array(est['samplers']['b1'])
  bias[names.index('stem_bn'), 1] = 50.0  # 'on' with certainty
  est = {**est, 'samplers': {**est['samplers'], 'b1': jnp.asarray(bias)}}
  state = state.replace(method_state={**state.method_state, 'estimator': est})
  return run, jax.device_put(state, run.replicated)


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_speculative_dispatch_equals_the_right_variant(tiny_run):
  run, state = tiny_run
  batch = run.batch(0)
  direct_state, direct = run.step_fn((0, False))(state, batch)
  assert int(direct.dispatch.bucket_needed) == 0
  top = len(run.method.estimator.cached_layer_sets.bucket_floors) - 1
  # The guess (from the 'previous' step) is too high: the step is re-run with bucket 0.
  guess = DispatchRecord(step=-1, bucket_run=top, diagnostics_run=0, bucket_needed=top,
                         next_bucket=top)
  spec = run.run_step(state, batch, guess)
  assert int(spec.dispatch.bucket_run) == 0 and spec.reruns == 1
  assert_trees_equal(spec.state, direct_state)
  assert_trees_equal(spec.output, jax.device_get(direct))
  # Running the too-high variant alone would have dropped stem_bn from the estimate.
  wrong_state, wrong = run.step_fn((top, False))(state, batch)
  assert not run.method.variants.accepts((top, False), jax.device_get(wrong.dispatch))
  assert rel_err(wrong_state.method_state['base'], direct_state.method_state['base']) > 0
  # Variants hand states to each other without recompiling (identical avals, no weak types).
  diag_state, _ = run.step_fn((0, True))(direct_state, run.batch(1))
  run.step_fn((0, False))(diag_state, run.batch(2))
  run.step_fn((top, False))(diag_state, run.batch(2))
  assert {key: f._cache_size() for key, f in run._steps.items()} == {  # pylint: disable=protected-access
      key: 1 for key in run._steps}  # pylint: disable=protected-access


def test_checkpoint_keeps_samplers_and_their_momentum(tiny_run, tmp_path):
  run, state = tiny_run
  last = None
  for step in range(3):
    result = run.run_step(state, run.batch(step), last)
    state, last = result.state, result.dispatch
  est = state.method_state['estimator']
  momentum = est['sampler_opt'][0].trace
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(momentum)) > 0
  assert float(est['num_steps']) == 3 and float(jnp.sum(est['active_counts'])) > 0
  ckpt = Checkpointer(str(tmp_path), 2)
  ckpt.save(3, state, {'progress': {}})
  restored, _ = ckpt.restore(run.init_state())
  ckpt.close()
  assert_trees_equal(restored.method_state, state.method_state)
  fresh = run.init_state().method_state['estimator']['samplers']
  assert rel_err(restored.method_state['estimator']['samplers'], fresh) > 0


def test_end_to_end_tiny_run_logs_famus_diagnostics(tmp_path):
  config = tiny_famus(candidates='reference')
  config.diagnostics_every = 4
  config.num_steps = 8
  summary = train_and_evaluate(config, str(tmp_path))
  assert json.loads((tmp_path / 'summary.json').read_text())['steps'] == 8 == summary['steps']
  train = [e for e in read_metrics(str(tmp_path)) if e['event'] == 'train']
  assert [e['step'] for e in train] == [4, 8]
  last = train[-1]
  num_candidates = len(last['famus_active'])
  assert num_candidates == 2  # the small CNN's last stage: stage1_block1_conv1 and _bn1
  assert set(last['famus_active']) <= {0.0, 1.0}
  assert sum(last['famus_active_counts']) == pytest.approx(
      sum(e['famus_num_sampled'] for e in train) * config.log_every, rel=1e-5)
  for key in ('famus_L_r', 'famus_L_g', 'famus_num_sampled', 'meta_loss'):
    assert np.isfinite(last[key])
  for e in train:  # diagnostics ran at steps 4 and 8 (the last step of each window)
    assert e['famus_diag_step'] == [e['step'] - 1]
    assert -1.0 <= e['famus_diag_cosine'][0] <= 1.0 and e['famus_diag_rel_err'][0] >= 0
