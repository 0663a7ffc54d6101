"""Amortised meta updates: `config.meta.update_every` = k.

On steps whose counter is a multiple of k the step is the meta method's usual
one (checked against the k = 1 step on the same state and batch); on the
others the meta model stays as it is and the actual update is checked against
an independent computation: `jax.grad` of the loss the current meta model
defines (MW-Net: sum_i eps_i(theta) L_i(w); MLC: the corrected cross-entropy
with the current T), through the real optimiser.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from famus_jax import catalogue, config_check
from famus_jax import config as config_lib
from famus_jax.data import build_data
from famus_jax.errors import ConfigError
from famus_jax.method_registry import create_method
from famus_jax.methods import mlc
from famus_jax.presets import tiny
from famus_jax.train.logbook import WindowMeans, read_metrics
from famus_jax.train.step import make_context_fn, make_train_step
from famus_jax.train.trainer import Run, data_mesh, train_and_evaluate

EVERY = 3


def rel_err(a, b):
  num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  den = sum(float(jnp.sum(y ** 2)) for y in jax.tree.leaves(b))
  return (num / den) ** 0.5


def make_config(method, every, **fields):
  c = tiny.get_config()
  c.method = method
  c.meta.update_every = every
  c.famus.exact_steps = 0  # FaMUS's sampled estimate from the first step
  c.lr.base = 0.5  # large steps, so that a wrong meta model would show
  c.mwnet.lr = 10.0
  c.mlc.lr = 1000.0
  c.mlc.init_diagonal = 0.5
  for key, value in fields.items():
    c[key.split('.')[0]][key.split('.')[1]] = value
  return c


def make_run(config):
  run = Run(config, build_data(config), data_mesh())
  return run, run.init_state()


def params_after(run, state, batch, loss_of_ctx):
  """Params after one real optimiser step on grad_w loss_of_ctx(ctx)(w), by jax.grad, and the
  context's per-example losses (one compiled program: eagerly, every op compiles alone)."""
  context = make_context_fn(run.model, True, run.lr_fn, run.config.augment, run.mean, run.std,
                            run.data.num_classes, run.config.meta_bn_train_mode)

  @jax.jit
  def step(state, batch):
    ctx, _, _ = context(state, batch)
    grads = jax.grad(loss_of_ctx(ctx))(state.params)
    updates, _ = run.tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), ctx.losses
  return step(state, batch)


def mwnet_loss(run, theta):
  def loss_of_ctx(ctx):
    eps = run.method.base._eps(theta, ctx.losses)  # pylint: disable=protected-access
    return lambda p: jnp.sum(eps * ctx.loss_vec_fn(p))
  return loss_of_ctx


def mlc_loss(theta):
  def loss_of_ctx(ctx):
    t = jnp.exp(mlc.log_transition(theta))

    def loss(p):
      (logits, _), _ = ctx.apply_fn(p, ctx.batch_stats, ctx.images)
      q = jax.nn.softmax(logits) @ t
      return -jnp.mean(jnp.log(jnp.take_along_axis(q, ctx.labels[:, None], axis=1)[:, 0]))
    return loss
  return loss_of_ctx


@pytest.mark.parametrize('method,fields', [
    ('mwnet', {'meta.actual_step': 'recompute', 'meta.amortised_lr': 'scaled'}),
    ('mwnet', {'meta.actual_step': 'reuse', 'meta.amortised_lr': 'same'}),
    ('famus', {'famus.strategy': 'block'}), ('mlc', {'meta.amortised_lr': 'scaled'})])
def test_meta_steps_equal_every_step_and_the_others_apply_the_meta_model(method, fields):
  """The meta step of update_every = k is the k = 1 step whose meta learning rate is k times
  larger (meta.amortised_lr='scaled', the default) or the same ('same')."""
  reference = make_config(method, 1, **fields)
  if reference.meta.amortised_lr == 'scaled':
    reference.mwnet.lr *= EVERY
    reference.mlc.lr *= EVERY
  every_step, state1 = make_run(reference)
  run, state = make_run(make_config(method, EVERY, **fields))
  batches = [run.batch(i) for i in range(EVERY + 1)]
  # Step 0 updates the meta model: the same step as with update_every = 1.
  want = every_step.run_step(state1, batches[0], None).state
  result = run.run_step(state, batches[0], None)
  assert rel_err(result.state.params, want.params) < 1e-6
  assert rel_err(result.state.method_state, want.method_state) < 1e-6
  assert float(result.output.metrics[catalogue.META_UPDATE]) == 1.0
  assert np.isfinite(float(result.output.metrics['meta_loss']))
  state = result.state
  # Steps 1 .. k-1 keep the meta model and train on what it says now.
  for step in range(1, EVERY):
    before = jax.device_get(state)  # the step donates `state`
    theta = before.method_state['base']['params']
    loss = mlc_loss(theta) if method == 'mlc' else mwnet_loss(run, theta)
    expected, losses = params_after(run, before, batches[step], loss)
    result = run.run_step(state, batches[step], None)
    state = result.state
    assert rel_err(state.params, expected) < 2e-5, step
    for new, old in zip(jax.tree.leaves(state.method_state), jax.tree.leaves(before.method_state)):
      np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    metrics = jax.device_get(result.output.metrics)
    assert metrics[catalogue.META_UPDATE] == 0.0 and np.isnan(metrics['meta_loss'])
    if method != 'mlc':
      eps = run.method.base._eps(theta, losses)  # pylint: disable=protected-access
      np.testing.assert_allclose(np.asarray(result.output.example_weights),
                                 np.asarray(eps) * eps.shape[0], rtol=1e-5)
  # Step k updates the meta model again.
  before = jax.device_get(state)
  result = run.run_step(state, batches[EVERY], None)
  assert float(result.output.metrics[catalogue.META_UPDATE]) == 1.0
  assert rel_err(result.state.method_state['base'], before.method_state['base']) > 1e-6


@pytest.mark.parametrize('method,famus_base', [('l2r', 'mwnet'), ('famus', 'l2r')])
def test_l2r_updates_at_every_step_whatever_the_period(method, famus_base):
  """L2R has no meta model to apply between meta updates: under update_every = 2 its first two
  steps are those of update_every = 1 (both compute the meta gradient on their batch)."""
  runs = []
  for every in (1, 2):
    c = make_config(method, every)
    c.famus.base = famus_base
    config_check.validate(c)
    runs.append(make_run(c))
  assert [run.method.update_every for run, _ in runs] == [1, 1]
  (run1, state1), (run2, state2) = runs
  for step in range(2):
    batch = run1.batch(step)
    out1, out2 = run1.run_step(state1, batch, None), run2.run_step(state2, batch, None)
    state1, state2 = out1.state, out2.state
    np.testing.assert_array_equal(np.asarray(out1.output.example_weights),
                                  np.asarray(out2.output.example_weights))
    assert float(out2.output.metrics['meta_loss']) == float(out1.output.metrics['meta_loss'])
  for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state2.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('method', ['erm', 'fsr', 'random_weight', 'dividemix'])
def test_methods_without_a_meta_model_ignore_the_period(method):
  c = make_config(method, 5)
  config_check.validate(c)
  assert create_method(c).update_every == 1


@pytest.mark.parametrize('method,base,period,label,has_meta_model', [
    ('mwnet', 'mwnet', 5, 'mwnet[reuse,every5,scaled_lr]', True),
    ('famus', 'mwnet', 5, 'famus[reuse,every5,scaled_lr]', True),
    ('mlc', 'mwnet', 1, 'mlc[reuse]', True), ('famus', 'mlc', 1, 'famus(mlc)[reuse]', True),
    ('famus', 'l2r', 1, 'famus(l2r)', False), ('l2r', 'mwnet', 1, 'l2r', False),
    ('erm', 'mwnet', 1, 'erm', False)])
def test_the_default_period_is_the_methods_own(method, base, period, label, has_meta_model):
  """meta.update_every = None (the schema's default): MW-Net and FaMUS on it every fifth step,
  MLC (and FaMUS on it) every step; the built method, the catalogue and the run's name agree,
  and an explicit value wins."""
  c = config_lib.get_config()
  c.method, c.famus.base = method, base
  assert c.meta.update_every is None
  config_check.validate(c)
  assert catalogue.update_every(c) == create_method(c).update_every == period
  assert catalogue.label(c.to_dict()) == label
  c.meta.update_every = 3
  assert catalogue.update_every(c) == create_method(c).update_every == (
      3 if has_meta_model else 1)


@pytest.mark.parametrize('every,message', [
    (0, r'config\.meta\.update_every=0 must be an integer >= 1'),
    ('lr', r"config\.meta\.amortised_lr='both' is not one of \['same', 'scaled'\]")])
def test_config_errors_name_the_field(every, message):
  c = make_config('mwnet', 1)
  if every == 'lr':
    c.meta.amortised_lr = 'both'
  else:
    c.meta.update_every = every
  with pytest.raises(ConfigError, match=message):
    config_check.validate(c)


def test_window_means_skip_steps_that_did_not_measure():
  window = WindowMeans()
  window.add({'loss': 1.0, 'meta_loss': 4.0, 'mask': np.array([1.0, 0.0])})
  window.add({'loss': 3.0, 'meta_loss': np.nan, 'mask': np.array([np.nan, np.nan])})
  window.add({'loss': 5.0, 'meta_loss': np.float32(np.nan), 'only_nan': np.nan})
  saved = json.loads(json.dumps(window.record()))
  resumed = WindowMeans()
  resumed.restore(saved)
  outs = [w.flush() for w in (window, resumed)]
  for out in outs:
    assert out['loss'] == 3.0 and out['meta_loss'] == 4.0 and 'only_nan' not in out
  np.testing.assert_array_equal(outs[0]['mask'], [1.0, 0.0])  # the last step that measured it
  # A checkpoint record written before per-metric counts: one count for every sum.
  old = WindowMeans()
  old.restore({'window_sums': {'loss': 6.0, 'meta_loss': 9.0}, 'window_count': 3})
  assert old.flush() == {'loss': 2.0, 'meta_loss': 3.0}


def test_label_names_the_amortised_runs():
  assert catalogue.label({'method': 'mwnet', 'meta': {'update_every': 5}}) == 'mwnet[every5]'
  assert catalogue.label({'method': 'famus', 'meta': {'update_every': 1}}) == 'famus'
  assert catalogue.label({'method': 'famus', 'meta': {'actual_step': 'reuse',
                                                      'update_every': 2}}) == 'famus[reuse,every2]'


def test_famus_learned_trains_and_logs_only_what_it_measured(tmp_path):
  """The learned samplers' dispatch with steps that run no estimator; every number in the log is
  finite (the window means leave the unmeasured steps out)."""
  c = make_config('famus', EVERY)
  c.lr.base = 0.05
  c.num_steps, c.log_every = 12, 2
  summary = train_and_evaluate(c, str(tmp_path))
  assert summary['steps'] == 12
  text = (tmp_path / 'metrics.jsonl').read_text()
  assert 'NaN' not in text
  train = [e for e in read_metrics(str(tmp_path)) if e['event'] == catalogue.TRAIN]
  # Windows of 2 steps: steps {0,1}, {2,3}, {4,5}, ... hold one meta update each or none.
  updates = [e[catalogue.META_UPDATE] for e in train]
  assert updates == [0.5, 0.5, 0.0, 0.5, 0.5, 0.0]
  for e, u in zip(train, updates):
    assert ('meta_loss' in e) == (catalogue.FAMUS_ACTIVE in e) == (u > 0), e


def test_the_host_runs_two_compiled_kinds_and_the_one_program_form_agrees():
  """The run compiles one step per kind (meta update / apply the meta model), chosen from the
  step's number, also right after a restart (no previous record); the one-program form
  (`jax.lax.cond`, a step built without the host policy) gives the same states."""
  run, state = make_run(make_config('mwnet', EVERY))
  fallback = make_train_step(run.model, run.method, run.tx, run.lr_fn, run.config.augment,
                             run.mean, run.std, run.data.num_classes,
                             run.config.meta_bn_train_mode)
  fallback = jax.jit(fallback)
  for step in range(EVERY + 1):
    batch = run.batch(step)
    want, _ = fallback(jax.device_get(state), batch)
    result = run.run_step(state, batch, None)  # no record: the step number alone decides
    state = result.state
    assert rel_err(state.params, want.params) < 1e-6, step
    assert rel_err(state.method_state, want.method_state) < 1e-6, step
  assert set(run._steps) == {('meta', None), ('apply',)}  # pylint: disable=protected-access


@pytest.mark.parametrize('exact_scale', [None, 1.0])
def test_exact_meta_updates_take_their_own_learning_rate(exact_scale):
  """famus.exact_meta_lr_scale: the meta updates within famus.exact_steps (steps 0, 5, 10 of
  exact_steps = 12 at update_every = 5) step at base lr x k x that scale, the later ones at
  base lr x k x meta_lr_scale; None keeps meta_lr_scale throughout. SGD with momentum by hand
  on a constant unit gradient at theta = 0 (no weight decay term)."""
  c = make_config('famus', 5, **{'meta.amortised_lr': 'scaled'})
  c.famus.exact_steps, c.famus.meta_lr_scale, c.famus.exact_meta_lr_scale = 12, 3.0, exact_scale
  config_check.validate(c)
  tx = create_method(c).base.tx
  theta = {'w': jnp.zeros(3)}
  opt_state, trace = tx.init(theta), 0.0
  for count in range(6):
    updates, opt_state = tx.update({'w': jnp.ones(3)}, opt_state, theta)
    trace = 1.0 + c.mwnet.momentum * trace
    scale = 3.0 if exact_scale is None or count >= 3 else exact_scale
    np.testing.assert_allclose(np.asarray(updates['w']), -c.mwnet.lr * 5 * scale * trace,
                               rtol=1e-6, err_msg=str(count))
