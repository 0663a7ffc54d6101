"""FSR: closed-form head meta step, dictionary, training behaviour, resume, configs.

Small CNN with BatchNorm, float32. The closed form is checked against two
independent references: autodiff through the head's virtual update (the
reference code's gradient-by-gradient), and FaMUS's layer-wise identity
(`coefficient_gradient`) restricted to the head layer.
"""

import dataclasses
import importlib
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import base as base_config
from configs import tiny
from famus_jax import config_check
from famus_jax.data import build_data
from famus_jax.errors import ConfigError
from famus_jax.fsr import dictionary as dict_lib
from famus_jax.fsr import head as head_lib
from famus_jax.fsr.method import FSR, create_fsr, head_trace
from famus_jax.meta import meta_gradient as mg
from famus_jax.models import SmallCNN
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.state import TrainState
from famus_jax.train.step import build_context, combined_gradient, cross_entropy
from famus_jax.train.trainer import Run, data_mesh, train_and_evaluate

N, Q, C = 12, 10, 5
META_LR = 0.1
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


def rel_err(a, b):
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def with_head(params, head):
  return {**params, 'head': head}


@pytest.fixture(scope='module')
def setup():
  """A training batch (N) and a reward batch (Q) through a perturbed small CNN.

  The optimiser state carries a non-zero momentum trace (three real updates
  with random gradients), so the virtual step's momentum term is exercised.
  """
  model = SmallCNN(C, width=4)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(N, 8, 8, 3)), jnp.float32)
  reward_images = jnp.asarray(rng.normal(size=(Q, 8, 8, 3)), jnp.float32)
  batch = {'label': jnp.asarray(rng.integers(0, C, N), jnp.int32),
           'index': jnp.arange(N, dtype=jnp.int32),
           'meta_label': jnp.asarray(np.arange(Q) % C, jnp.int32)}
  variables = model.init(jax.random.PRNGKey(1), images, train=False)
  params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                        variables['params'])
  tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(0.05, momentum=MOMENTUM))
  opt_state = tx.init(params)
  for _ in range(3):
    fake = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    _, opt_state = tx.update(fake, opt_state, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables['batch_stats'], opt_state=opt_state,
                     method_state=None, rng=jax.random.PRNGKey(2))
  # val_loss_fn = the reward loss through the whole network (BatchNorm in training mode).
  ctx, _ = build_context(model, state, batch, images, reward_images, jnp.float32(0.05),
                         jax.random.PRNGKey(3), C)
  (_, reward_features), _ = ctx.apply_fn(params, state.batch_stats, reward_images, True)
  return ctx, reward_images, reward_features, batch['meta_label']


def autodiff_eps_gradient(ctx, eps, direction, trace):
  """dL_R/d eps by reverse-over-reverse through the head's virtual update (no closed form)."""
  params = ctx.params

  def reward_loss_of_eps(e):
    grads = jax.grad(lambda hd: jnp.sum(e * ctx.loss_vec_fn(with_head(params, hd))))(
        params['head'])
    head_star = {}
    for key in ('kernel', 'bias'):
      d = direction.grad_coef * (grads[key] + direction.weight_decay * params['head'][key])
      if trace is not None:
        d = d + direction.trace_coef * trace[key]
      head_star[key] = params['head'][key] - META_LR * d
    return ctx.val_loss_fn(with_head(params, head_star))

  return jax.jit(jax.grad(reward_loss_of_eps))(eps)


def closed_form(ctx, reward_features, reward_labels, eps, direction, trace):
  head_star = head_lib.virtual_head(ctx.params['head'], ctx.features, ctx.errors, eps, trace,
                                    META_LR, direction)
  return head_lib.eps_gradient(head_star, ctx.features, ctx.errors, reward_features,
                               reward_labels, META_LR, direction), head_star


@pytest.mark.parametrize('nesterov', [False, True])
def test_closed_form_matches_autodiff_through_virtual_head(setup, nesterov):
  ctx, _, reward_features, reward_labels = setup
  trace = head_trace(ctx.opt_state)
  assert trace is not None and float(jnp.abs(trace['kernel']).max()) > 0
  direction = head_lib.optimizer_direction(MOMENTUM, nesterov, WEIGHT_DECAY)
  eps = jnp.full((N,), 1.0 / N)
  ours, head_star = closed_form(ctx, reward_features, reward_labels, eps, direction, trace)
  reference = autodiff_eps_gradient(ctx, eps, direction, trace)
  assert np.abs(np.asarray(reference)).max() > 1e-5
  assert rel_err(ours.grad_eps, reference) < 1e-5
  # The reward loss reported is the network's reward loss at theta*.
  np.testing.assert_allclose(ours.reward_loss, ctx.val_loss_fn(with_head(ctx.params, head_star)),
                             rtol=1e-5)
  for mode in ('noise', 'longtail'):
    np.testing.assert_allclose(head_lib.weights_from_gradient(ours.grad_eps, mode),
                               head_lib.weights_from_gradient(reference, mode),
                               rtol=1e-4, atol=1e-6)


def test_closed_form_equals_famus_restricted_head_gradient(setup):
  """FSR's step function vs FaMUS's layer-wise identity restricted to the head layer.

  (a) L2R: eps = 0, no momentum, no weight decay -> theta* = theta; the FaMUS
      restricted-layer gradient on the L2R base with layers = {'head'} and
      alpha = meta_lr is FSR's closed form, and so are the L2R weights.
  (b) FSR's actual virtual step (eps = 1/b, momentum trace, weight decay): the
      same identity holds with the validation gradient taken at theta* (the
      start offset and the momentum only move the point) and
      alpha = meta_lr * c_g (the optimiser's gradient coefficient).
  """
  ctx, _, reward_features, reward_labels = setup
  # (a) the L2R correspondence.
  plain = head_lib.Direction(1.0, 0.0, 0.0)
  ours, _ = closed_form(ctx, reward_features, reward_labels, jnp.zeros((N,)), plain, None)
  _, val_grad = mg.restricted_value_and_grad(ctx.val_loss_fn, ctx.params, ['head'])
  assert sorted(val_grad) == ['head/bias', 'head/kernel']
  famus = mg.coefficient_gradient(ctx.loss_vec_fn, ctx.params, val_grad, META_LR)
  assert rel_err(ours.grad_eps, famus) < 1e-5
  from famus_jax.methods.bases import L2RBase  # pylint: disable=import-outside-toplevel
  l2r = L2RBase(ml_collections.ConfigDict({'zero_sum': 'uniform'}))
  l2r_weights, _, _ = l2r.update({}, ctx.losses, famus, None)
  np.testing.assert_allclose(head_lib.weights_from_gradient(ours.grad_eps, 'noise'),
                             l2r_weights, rtol=1e-3, atol=1e-6)
  # (b) FSR's virtual step, momentum and start offset included in the reference.
  trace = head_trace(ctx.opt_state)
  direction = head_lib.optimizer_direction(MOMENTUM, False, WEIGHT_DECAY)
  ours, head_star = closed_form(ctx, reward_features, reward_labels, jnp.full((N,), 1.0 / N),
                                direction, trace)
  _, val_grad = mg.restricted_value_and_grad(ctx.val_loss_fn, with_head(ctx.params, head_star),
                                             ['head'])
  famus = mg.coefficient_gradient(ctx.loss_vec_fn, ctx.params, val_grad,
                                  META_LR * direction.grad_coef)
  assert rel_err(ours.grad_eps, famus) < 1e-5
  # Without the offset/momentum the numbers differ: the correspondence is not trivial.
  assert rel_err(closed_form(ctx, reward_features, reward_labels, jnp.zeros((N,)), plain,
                             None)[0].grad_eps, famus) > 1e-3


def test_weight_rules():
  grad = jnp.asarray([-0.3, 0.1, -0.1, 0.0])
  w = head_lib.weights_from_gradient(grad, 'noise')
  expected = np.array([0.3, 0.0, 0.1, 0.0]) / (0.4 + head_lib.NORM_EPS)
  np.testing.assert_allclose(w, expected, rtol=1e-6)
  w = head_lib.weights_from_gradient(grad, 'longtail')
  raw = 0.25 - np.asarray(grad)
  unnorm = raw - raw.min() + 0.25
  np.testing.assert_allclose(w, unnorm / (unnorm.sum() + head_lib.NORM_EPS), rtol=1e-6)
  assert float(w.min()) > 0
  # All clipped: no weighted update (the reference code's behaviour).
  np.testing.assert_array_equal(head_lib.weights_from_gradient(jnp.ones(3), 'noise'), 0.0)


def fsr_config(**fsr_fields):
  c = tiny.get_config()
  c.method, c.num_meta = 'fsr', 0
  for key, value in fsr_fields.items():
    c.fsr[key] = value
  return c


def test_method_step_matches_reference(setup):
  """FSR.weights end to end: trace from the real optimiser state, reward forward, weights,
  and the one-backward gradient (label smoothing and re-labeling as logit cotangents)."""
  ctx, _, _, _ = setup
  c = fsr_config(dictionary_size=10, reward_batch_size=Q, mixup_alpha=0.0, relabel=True,
                 relabel_weight=2.0, label_smoothing=0.1, warmup_epochs=0)
  method = FSR(c)
  state = method.init_state(jax.random.PRNGKey(0), ctx.params, 20)
  rng = np.random.default_rng(5)
  state['dict_images'] = jnp.asarray(rng.integers(0, 256, state['dict_images'].shape), jnp.uint8)
  state['image_mean'] = jnp.full((3,), 0.5)
  state['image_std'] = jnp.full((3,), 0.25)
  pred = rng.dirichlet(np.ones(C), size=20).astype(np.float32)
  state['pred'] = jnp.asarray(pred)
  state['visits'] = jnp.asarray(np.r_[np.ones(6), np.zeros(14)], jnp.int32)   # 6 seen
  key = jax.random.PRNGKey(7)
  out = method.weights(ctx, state, {}, key)

  # Reference: same reward batch (same key split), autodiff meta gradient.
  reward_images, reward_labels = method.draw_reward_batch(state, jax.random.split(key)[0])
  assert np.all(np.bincount(np.asarray(reward_labels), minlength=C) == Q // C)

  def reward_loss(params):
    (logits, _), _ = ctx.apply_fn(params, ctx.batch_stats, reward_images, True)
    return jnp.mean(cross_entropy(logits, reward_labels))

  smooth_ctx = dataclasses.replace(
      ctx, val_loss_fn=reward_loss,
      loss_vec_fn=lambda p: head_lib.soft_cross_entropy(
          ctx.apply_fn(p, ctx.batch_stats, ctx.images, True)[0][0],
          head_lib.smoothed_targets(ctx.labels, C, 0.1)))
  eps = jnp.full((N,), 1.0 / N)
  reference = autodiff_eps_gradient(smooth_ctx, eps, method.direction, head_trace(ctx.opt_state))
  expected_w = head_lib.weights_from_gradient(reference, 'noise')
  np.testing.assert_allclose(out.weights, expected_w, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out.metrics['example_weights'], expected_w * N, rtol=1e-4, atol=1e-5)

  # The single backward pass equals the gradient of the total FSR loss.
  probs = jax.nn.softmax(ctx.logits)
  seen = np.arange(N) < 6
  targets_rl = jnp.where(seen[:, None], pred[:N], probs)

  def total_loss(params):
    logits = ctx.apply_fn(params, ctx.batch_stats, ctx.images, True)[0][0]
    weighted = jnp.sum(out.weights * head_lib.soft_cross_entropy(
        logits, head_lib.smoothed_targets(ctx.labels, C, 0.1)))
    return weighted + 2.0 * jnp.mean(head_lib.soft_cross_entropy(logits, targets_rl))

  got = combined_gradient(ctx, out)
  want = jax.grad(total_loss)(ctx.params)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  assert rel_err(flat(got), flat(want)) < 1e-4

  # State: scores and visits of the batch, prediction EMA (first visit = prediction).
  new = out.method_state
  np.testing.assert_array_equal(new['visits'][:N], np.asarray(state['visits'][:N]) + 1)
  np.testing.assert_allclose(new['pred'][6:N], probs[6:], rtol=1e-5)
  np.testing.assert_allclose(new['pred'][:6], 0.9 * pred[:6] + 0.1 * probs[:6], rtol=1e-5)
  # Meta-margin: loss drop of each example from theta to theta* through the network.
  meta = method.meta_step(ctx, method.reward_features(ctx, reward_images), reward_labels)
  smooth_losses = smooth_ctx.loss_vec_fn
  margin = (smooth_losses(ctx.params)
            - smooth_losses(with_head(ctx.params, meta.head_star)))
  np.testing.assert_allclose(meta.loss_before - meta.loss_after, margin, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new['score'][:N], np.where(seen, 0.1 * margin, margin),
                             rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(new['score'][N:]) == 0)


def test_mixup_path_single_extra_backward(setup):
  """With MixUp the gradient comes from the mixed forward only; weights are uniform in warm-up."""
  ctx, _, _, _ = setup
  c = fsr_config(dictionary_size=10, reward_batch_size=Q, mixup_alpha=1.0, warmup_epochs=1)
  method = FSR(c)
  state = method.init_state(jax.random.PRNGKey(0), ctx.params, 20)
  out = method.weights(ctx, state, {}, jax.random.PRNGKey(1))
  assert out.weights is None and out.logit_cotangent is None
  assert jax.tree.structure(out.extra_grads) == jax.tree.structure(ctx.params)
  assert np.isfinite(float(optax.tree.norm(out.extra_grads)))
  np.testing.assert_allclose(out.metrics['example_weights'], np.ones(N), rtol=1e-6)
  assert float(out.metrics['fsr_reweighting']) == 0.0


def test_dictionary_host_and_device_sampling():
  labels = np.array([0] * 7 + [1] * 2 + [2] * 5 + [3] * 6)   # class 1 is short
  rng = np.random.default_rng(0)
  ids = dict_lib.balanced_random_ids(labels, 4, 3, rng)
  assert ids.shape == (4, 3) and ids.dtype == np.int32
  for c in range(4):
    assert np.all(labels[ids[c]] == c)
  assert len(set(ids[0])) == 3 and set(ids[1]) == {7, 8}
  scores = rng.normal(size=len(labels))
  visits = np.ones(len(labels), int)
  visits[np.argmax(np.where(labels == 0, scores, -np.inf))] = 0   # best of class 0 never seen
  top = dict_lib.top_score_ids(labels, scores, visits, 4, 3)
  for c in (0, 2, 3):
    members = np.flatnonzero((labels == c) & (visits > 0))
    assert set(top[c]) == set(members[np.argsort(-scores[members])][:3])
  assert set(top[1]) == {7, 8}
  noisy = labels.copy()
  clean = labels.copy()
  clean[ids[0, 0]] = 3
  assert dict_lib.purity(ids, noisy, clean) == pytest.approx(11 / 12)
  with pytest.raises(ValueError, match='label'):
    dict_lib.balanced_random_ids(np.array([0, 0, 2]), 3, 1, rng)
  # On the device: class-balanced reward slots, distinct within a class.
  for q in (8, 10, 13):
    rows, cols = dict_lib.reward_slots(jax.random.PRNGKey(q), 4, 3, q)
    counts = np.bincount(np.asarray(rows), minlength=4)
    assert counts.sum() == q and counts.max() - counts.min() <= 1
    assert np.all(np.asarray(cols) < 3)
    for c in range(4):
      got = np.asarray(cols)[np.asarray(rows) == c]
      assert len(set(got)) == min(len(got), 3)


def synthetic_config():
  """A learnable noisy task: 1000 synthetic 8x8 images, 36.6% symmetric noise."""
  c = fsr_config(dictionary_size=200, reward_batch_size=50, warmup_epochs=1)
  c.width = 16
  c.augment.crop_padding, c.augment.flip = 0, False
  c.synthetic.num_train = 1000
  c.batch_size = 50
  return c


@pytest.fixture(scope='module')
def noisy_run():
  """Five epochs of FSR (default noise setting: MixUp, re-labeling) in a direct loop."""
  c = synthetic_config()
  data = build_data(c)
  run = Run(c, data, data_mesh())
  state = run.init_state()
  noisy = np.asarray(data.is_noisy)
  record = {'purity': [float(state.method_state['dict_purity'])], 'w_clean': [], 'w_noisy': [],
            'ids': [np.asarray(state.method_state['dict_ids'])]}
  step = 0
  for epoch in range(5):
    for _ in range(run.steps_per_epoch):
      batch = run.batch(step)
      state, metrics, _ = run.run_step(state, batch, None)
      step += 1
      if epoch >= c.fsr.warmup_epochs:
        w = np.asarray(metrics['example_weights'])
        is_noisy = noisy[np.asarray(batch['index'])]
        record['w_clean'].extend(w[~is_noisy])
        record['w_noisy'].extend(w[is_noisy])
    state = state.replace(method_state=run.method.on_epoch_end(state.method_state, epoch + 1,
                                                               data))
    record['purity'].append(float(state.method_state['dict_purity']))
    record['ids'].append(np.asarray(state.method_state['dict_ids']))
  # The host-side dictionary refresh keeps shapes and placement: one compiled step.
  assert run.step_fn(None)._cache_size() == 1  # pylint: disable=protected-access
  return c, data, state, record


def test_dictionary_balanced_exact_size_during_training(noisy_run):
  c, data, state, record = noisy_run
  per_class = c.fsr.dictionary_size // data.num_classes
  for ids in record['ids']:
    assert ids.shape == (data.num_classes, per_class)
    for cls in range(data.num_classes):
      assert np.all(data.train_labels[ids[cls]] == cls)
      assert len(np.unique(ids[cls])) == per_class   # every class has > per_class examples
  assert int(state.method_state['epoch']) == 5
  np.testing.assert_array_equal(state.method_state['dict_images'],
                                data.train_images[record['ids'][-1]])


def test_purity_rises_and_noisy_weights_lower(noisy_run):
  _, data, _, record = noisy_run
  clean_rate = 1.0 - float(np.mean(data.is_noisy))
  assert abs(record['purity'][0] - clean_rate) < 0.1     # the random start is about the data
  assert min(record['purity'][1:]) > clean_rate + 0.2    # after warm-up: clearly purer
  assert record['purity'][-1] > 0.9
  w_clean, w_noisy = np.mean(record['w_clean']), np.mean(record['w_noisy'])
  assert w_noisy < 0.5 * w_clean, (w_clean, w_noisy)


def test_checkpoint_round_trip_of_method_state(noisy_run, tmp_path):
  _, _, state, _ = noisy_run
  ckpt = Checkpointer(str(tmp_path), keep=1)
  ckpt.save(7, state, {'progress': {}})
  template = jax.tree.map(jnp.zeros_like, state)
  restored, _ = ckpt.restore(template)
  ckpt.close()
  for key in ('dict_ids', 'dict_images', 'dict_purity', 'score', 'visits', 'pred', 'epoch',
              'image_mean', 'image_std'):
    np.testing.assert_array_equal(restored.method_state[key], state.method_state[key])


def _restore_final(workdir, config):
  data = build_data(config)
  run = Run(config, data, data_mesh())
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  state, progress = ckpt.restore(run.init_state())
  ckpt.close()
  return state, progress


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
  """Tiny FSR run over two dictionary refreshes: stop at step 40, resume to 70."""
  def config(steps):
    c = fsr_config(dictionary_size=100, reward_batch_size=20, warmup_epochs=1)
    c.num_steps, c.checkpoint_every, c.eval_every, c.log_every = steps, 40, 1000, 10
    return c

  whole, part = str(tmp_path / 'whole'), str(tmp_path / 'part')
  train_and_evaluate(config(70), whole)
  # "Killed" right after the checkpoint at step 40: that workdir is this one without
  # the step-70 checkpoint (the metrics log past 40 is truncated on resume).
  shutil.copytree(whole, part)
  shutil.rmtree(os.path.join(part, 'checkpoints', '70'))
  ckpt = Checkpointer(part, 2)
  assert ckpt.latest_step() == 40
  ckpt.close()
  train_and_evaluate(config(70), part)          # resumes from step 40
  a, _ = _restore_final(whole, config(70))
  b, _ = _restore_final(part, config(70))
  assert int(a.step) == int(b.step) == 70
  assert int(a.method_state['epoch']) == 2     # 32 steps per epoch: refreshed at 32 and 64
  for key in a.method_state:
    np.testing.assert_allclose(np.asarray(b.method_state[key], np.float64),
                               np.asarray(a.method_state[key], np.float64),
                               rtol=1e-5, atol=1e-6, err_msg=key)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('field,value,match', [
    ('weight_mode', 'both', 'weight_mode'),
    ('dictionary_size', 1999, 'dictionary_size'),
    ('score_momentum', 1.0, 'score_momentum'),
    ('reward_batch_size', 0, 'reward_batch_size'),
    ('mixup_alpha', -1.0, 'mixup_alpha'),
    ('relabel_start_epoch', -2, 'relabel_start_epoch'),
    ('score_before', 'mixed', 'score_before'),
])
def test_config_errors_name_the_field(field, value, match):
  c = fsr_config()
  c.fsr[field] = value
  with pytest.raises(ConfigError, match=f'config.fsr.{match}'):
    config_check.validate(c)
  with pytest.raises(ConfigError, match=match):
    create_fsr(c)


PRESETS = ['cifar10_fsr_noise', 'cifar100_fsr_noise', 'cifar10_fsr_longtail',
           'fashion_mnist_fsr']


@pytest.mark.parametrize('name', PRESETS)
def test_presets(name):
  c = importlib.import_module(f'configs.{name}').get_config()
  config_check.validate(c)
  assert c.method == 'fsr' and c.num_meta == 0
  method = create_fsr(c)
  assert not method.uses_meta_set
  if 'longtail' in name:
    assert c.imbalance_factor == 100 and c.fsr.weight_mode == 'longtail'
    assert not c.fsr.relabel and c.fsr.mixup_alpha == 0 and c.fsr.label_smoothing == 0.1


def test_fsr_fields_declared_in_base():
  declared = set(base_config.get_config().fsr.keys())
  assert {'dictionary_size', 'reward_batch_size', 'meta_lr', 'score_momentum', 'warmup_epochs',
          'relabel', 'relabel_momentum', 'relabel_weight', 'relabel_start_epoch', 'mixup_alpha',
          'label_smoothing', 'weight_mode', 'score_before'} <= declared
  assert base_config.get_config().fsr.meta_lr == 0.1
