"""FSR: closed-form head meta step, dictionary, training behaviour, resume, configs.

Small CNN with BatchNorm, float32. The closed form is checked against two
independent references: autodiff through the head's virtual update (the
reference code's gradient-by-gradient), and FaMUS's layer-wise identity
(`coefficient_gradient`) restricted to the head layer. The one-pass MixUp
form (`mixup_form='one_pass'`) is checked the same way on the mixed batch, and
its update, scores and re-labeling against direct computations.
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

from famus_jax import config as base_config
from famus_jax.presets import tiny
from famus_jax import config_check
from famus_jax.data import augment_batch, build_data
from famus_jax.errors import ConfigError
from famus_jax.fsr import dictionary as dict_lib
from famus_jax.fsr import head as head_lib
from famus_jax.data.augment import augment_resized_batch, resized_crop_of
from famus_jax.data.mixup import mix_rows
from famus_jax.fsr.method import FSR, create_fsr, head_trace
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods.base import Method
from famus_jax.models import SmallCNN
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.state import TrainState
from famus_jax.train.step import (build_context, combined_gradient, cross_entropy, make_apply_fn,
                                  make_train_step)
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
def network():
  """A perturbed small CNN, its state, a training batch (N) and reward images (Q).

  The optimiser state carries a non-zero momentum trace (three real updates
  with random gradients), so the virtual step's momentum term is exercised.
  Returns (model, state, batch, images, reward_images, tx).
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
  return model, state, batch, images, reward_images, tx


@pytest.fixture(scope='module')
def setup(network):
  """The clean context of `network`'s training batch and the reward batch's head inputs."""
  model, state, batch, images, reward_images, _ = network
  params = state.params
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
  np.testing.assert_allclose(out.example_weights, expected_w * N, rtol=1e-4, atol=1e-5)

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
  # Paper Eq. 7 with beta = 0.1 (the default): 0.1 of the old estimate kept per visit.
  np.testing.assert_allclose(new['pred'][:6], 0.1 * pred[:6] + 0.9 * probs[:6], rtol=1e-5)
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
  np.testing.assert_allclose(out.example_weights, np.ones(N), rtol=1e-6)
  assert float(out.metrics['fsr_reweighting']) == 0.0


def test_example_max_lambda_follows_the_folded_beta():
  """mixup_lambda='example_max': lam_i = max(l, 1 - l), l ~ Beta(1/2, 1/2): E = 1/2 + 1/pi."""
  method = FSR(fsr_config(mixup_alpha=0.5, mixup_lambda='example_max'))
  mix = method.draw_mixup(jax.random.PRNGKey(0), 20000, jnp.float32)
  lam = np.asarray(mix.lam)
  assert lam.shape == (20000,) and lam.min() >= 0.5 and lam.max() <= 1.0
  # l = sin^2(t), t ~ U(0, pi/2): E|l - 1/2| = E|cos 2t| / 2 = 1/pi, and
  # P(lam > 0.9) = P(l > 0.9) + P(l < 0.1) = 2 (1 - (2 / pi) asin(sqrt(0.9))).
  assert abs(lam.mean() - (0.5 + 1 / np.pi)) < 0.005
  tail = 2 * (1 - 2 / np.pi * np.arcsin(np.sqrt(0.9)))
  assert abs(np.mean(lam > 0.9) - tail) < 0.01
  assert sorted(np.asarray(mix.perm).tolist()) == list(range(20000))
  batch = FSR(fsr_config(mixup_alpha=0.5, mixup_lambda='batch')).draw_mixup(
      jax.random.PRNGKey(0), 8, jnp.float32)
  assert batch.lam.shape == ()


def test_example_max_two_pass_gradient_by_hand(setup):
  """Two-pass MixUp with per-example lam and logit-EMA re-labeling: the extra gradient equals
  jax.grad of the loss written out row by row (numpy lam, images mixed by hand)."""
  ctx, _, _, _ = setup
  c = fsr_config(dictionary_size=10, reward_batch_size=Q, mixup_alpha=0.5,
                 mixup_lambda='example_max', relabel=True, relabel_weight=2.0,
                 relabel_target='logit_ema', relabel_momentum=0.1, warmup_epochs=0)
  method = FSR(c)
  state = fsr_state_logits(method, ctx.params)
  key = jax.random.PRNGKey(7)
  out = method.weights(ctx, state, {}, key)
  mix = method.draw_mixup(jax.random.split(key)[1], N, jnp.float32)
  lam, perm = np.asarray(mix.lam, np.float64), np.asarray(mix.perm)
  assert lam.shape == (N,) and np.all(lam >= 0.5)
  images = np.asarray(ctx.images, np.float64)
  mixed = jnp.asarray(lam[:, None, None, None] * images
                      + (1 - lam[:, None, None, None]) * images[perm], jnp.float32)
  w = np.asarray(out.example_weights, np.float64) / N
  old = np.asarray(state['pred'][:N], np.float64)
  target = np.exp(old / np.sqrt(np.mean(old ** 2) + 1e-8))
  target /= target.sum(-1, keepdims=True)
  soft = lam[:, None] * target + (1 - lam[:, None]) * target[perm]
  labels = np.asarray(ctx.labels)

  def loss(params):
    logp = jax.nn.log_softmax(ctx.apply_fn(params, ctx.batch_stats, mixed, True)[0][0])
    own = -logp[jnp.arange(N), labels]
    partner = -logp[jnp.arange(N), labels[perm]]
    weighted = jnp.sum(w * (lam * own + (1 - lam) * partner))  # w_i: the whole mixed loss
    return weighted + 2.0 * jnp.mean(-jnp.sum(soft * logp, axis=-1))

  assert rel_err(flat(out.extra_grads), flat(jax.grad(loss)(ctx.params))) < 1e-4


def test_paper_mixup_losses_gradient_by_hand(setup):
  """mixup_losses='weighted' (paper Sec. 4.3): MixUp on the weighted loss only; re-labeling on
  the clean forward. The update (mixed extra gradient + clean logit cotangent) equals jax.grad
  of the loss written out by hand."""
  ctx, _, _, _ = setup
  c = fsr_config(dictionary_size=10, reward_batch_size=Q, mixup_alpha=1.0, relabel=True,
                 relabel_weight=2.0, mixup_losses='weighted', warmup_epochs=0)
  method = FSR(c)
  state = fsr_state(method, ctx.params)
  key = jax.random.PRNGKey(7)
  out = method.weights(ctx, state, {}, key)
  assert out.extra_grads is not None and out.logit_cotangent is not None
  mix = method.draw_mixup(jax.random.split(key)[1], N, jnp.float32)
  lam, perm = np.asarray(mix.lam, np.float64), np.asarray(mix.perm)
  images = np.asarray(ctx.images, np.float64)
  mixed = jnp.asarray(lam[:, None, None, None] * images
                      + (1 - lam[:, None, None, None]) * images[perm], jnp.float32)
  w = np.asarray(out.example_weights, np.float64) / N
  labels = np.asarray(ctx.labels)
  probs = np.asarray(jax.nn.softmax(ctx.logits), np.float64)
  seen = (np.arange(N) < 6)[:, None]
  target = np.where(seen, np.asarray(state['pred'][:N], np.float64), probs)

  def loss(params):
    logp = jax.nn.log_softmax(ctx.apply_fn(params, ctx.batch_stats, mixed, True)[0][0])
    own = -logp[jnp.arange(N), labels]
    partner = -logp[jnp.arange(N), labels[perm]]
    clean_logp = jax.nn.log_softmax(ctx.apply_fn(params, ctx.batch_stats, ctx.images,
                                                 True)[0][0])
    relabel = jnp.mean(-jnp.sum(target * clean_logp, axis=-1))
    return jnp.sum(w * (lam * own + (1 - lam) * partner)) + 2.0 * relabel

  assert rel_err(flat(combined_gradient(ctx, out)), flat(jax.grad(loss)(ctx.params))) < 1e-4
  # The reference form ('all') differs: re-labeling on the mixed rows.
  ref = FSR(fsr_config(dictionary_size=10, reward_batch_size=Q, mixup_alpha=1.0, relabel=True,
                       relabel_weight=2.0, warmup_epochs=0)).weights(ctx, state, {}, key)
  assert ref.logit_cotangent is None
  assert rel_err(flat(combined_gradient(ctx, ref)), flat(jax.grad(loss)(ctx.params))) > 1e-3


def fsr_state_logits(method, params, num_train=20, seed=5):
  """An FSR state whose prediction store holds logit EMAs for examples 0-5 (seen)."""
  state = fsr_state(method, params, num_train, seed)
  rng = np.random.default_rng(seed + 1)
  logits = rng.normal(scale=3.0, size=(num_train, C)) * (np.arange(num_train) < 6)[:, None]
  state['pred'] = jnp.asarray(logits, jnp.float32)
  return state


def test_logit_ema_relabeling_by_hand(setup):
  """relabel_target='logit_ema' (MixUp off): target softmax of the RMS-normalised stored logits
  (uniform on a first visit), store b rms(u) + (1 - b) z, cotangent p / N (p - target)."""
  ctx, _, _, _ = setup
  c = fsr_config(dictionary_size=10, reward_batch_size=Q, mixup_alpha=0.0, relabel=True,
                 relabel_weight=2.0, relabel_target='logit_ema', relabel_momentum=0.1,
                 warmup_epochs=0)
  method = FSR(c)
  state = fsr_state_logits(method, ctx.params)
  out = method.weights(ctx, state, {}, jax.random.PRNGKey(7))
  old = np.asarray(state['pred'][:N], np.float64)
  normalized = old / np.sqrt(np.mean(old ** 2) + 1e-8)
  target = np.exp(normalized) / np.exp(normalized).sum(-1, keepdims=True)
  np.testing.assert_allclose(target[6:], 1.0 / C, rtol=1e-12)      # first visits: uniform
  z = np.asarray(ctx.logits, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(out.method_state['pred'][:N], 0.1 * normalized + 0.9 * z,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out.method_state['pred'][N:], state['pred'][N:])
  np.testing.assert_allclose(out.logit_cotangent, 2.0 / N * (p - target), rtol=1e-4, atol=1e-7)
  logp = np.log(p)
  np.testing.assert_allclose(out.metrics['fsr_relabel_loss'], -(target * logp).sum(-1).mean(),
                             rtol=1e-5)


# ---- one-pass MixUp (config.fsr.mixup_form='one_pass') ------------------------


def fsr_state(method, params, num_train=20, seed=5):
  """An FSR state with a random dictionary, prediction EMA, scores; examples 0-5 seen."""
  state = method.init_state(jax.random.PRNGKey(0), params, num_train)
  rng = np.random.default_rng(seed)
  state['dict_images'] = jnp.asarray(rng.integers(0, 256, state['dict_images'].shape), jnp.uint8)
  state['image_mean'] = jnp.full((3,), 0.5)
  state['image_std'] = jnp.full((3,), 0.25)
  if 'pred' in state:
    state['pred'] = jnp.asarray(rng.dirichlet(np.ones(C), size=num_train).astype(np.float32))
  state['visits'] = jnp.asarray(np.r_[np.ones(6), np.zeros(num_train - 6)], jnp.int32)
  state['score'] = jnp.asarray(rng.normal(size=num_train).astype(np.float32))
  return state


def one_pass_config(nesterov=False, **fsr_fields):
  fields = dict(dictionary_size=10, reward_batch_size=Q, mixup_alpha=1.0, mixup_form='one_pass',
                mixup_lambda='batch', relabel=True, relabel_weight=2.0, warmup_epochs=0)
  fields.update(fsr_fields)
  c = fsr_config(**fields)
  c.optimizer.nesterov = nesterov
  return c


def one_pass_case(network, nesterov=False, **fsr_fields):
  """(method, ctx of the mixed forward, method state, step key) as the shared step builds them."""
  model, state, batch, images, reward_images, _ = network
  method = FSR(one_pass_config(nesterov, **fsr_fields))
  ms = fsr_state(method, state.params)
  key = jax.random.PRNGKey(7)
  mixed, mix = method.prepare_images(images, key)
  ctx, _ = build_context(model, state, batch, mixed, reward_images, jnp.float32(0.05),
                         jax.random.PRNGKey(3), C, mix=mix)
  return method, ctx, ms, key


def mixed_loss_vec(ctx, images, targets, lam, perm):
  """params -> (n,) lam l(z~_i, t_i) + (1 - lam) l(z~_i, t_perm(i)) through the network."""

  def losses(params):
    logits = ctx.apply_fn(params, ctx.batch_stats, images, True)[0][0]
    return (lam * head_lib.soft_cross_entropy(logits, targets)
            + (1 - lam) * head_lib.soft_cross_entropy(logits, targets[perm]))

  return losses


def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize('nesterov,smoothing', [(False, 0.0), (True, 0.1)])
def test_one_pass_weights_match_autodiff_on_mixed_batch(network, setup, nesterov, smoothing):
  """Weights = reverse-over-reverse autodiff of the head-only look-ahead on the mixed batch."""
  _, _, _, images, _, _ = network
  method, ctx, ms, key = one_pass_case(network, nesterov, label_smoothing=smoothing)
  lam, perm = float(ctx.mix.mix.lam), np.asarray(ctx.mix.mix.perm)
  assert 0 < lam < 1 and sorted(perm) == list(range(N)) and np.any(perm != np.arange(N))
  mixed = lam * images + (1 - lam) * images[perm]
  np.testing.assert_allclose(ctx.images, mixed, rtol=1e-5, atol=1e-6)
  out = method.weights(ctx, ms, {}, key)
  assert out.weights is None and out.extra_grads is None and out.logit_cotangent is not None

  # Reference: the same reward batch (same key split); the virtual head step by autodiff of the
  # mixed loss through the whole network at the mixed images (only the head moves).
  reward_images, reward_labels = method.draw_reward_batch(ms, jax.random.split(key)[0])
  targets = head_lib.smoothed_targets(ctx.labels, C, smoothing)

  def reward_loss(params):
    # The look-ahead forward runs on the reward and the clean training images together.
    both = jnp.concatenate([reward_images, images])
    (logits, _), _ = ctx.apply_fn(params, ctx.batch_stats, both, True)
    return jnp.mean(cross_entropy(logits[:Q], reward_labels))

  ref_ctx = dataclasses.replace(ctx, loss_vec_fn=mixed_loss_vec(ctx, mixed, targets, lam, perm),
                                val_loss_fn=reward_loss)
  reference = autodiff_eps_gradient(ref_ctx, jnp.full((N,), 1.0 / N), method.direction,
                                    head_trace(ctx.opt_state))
  assert np.abs(np.asarray(reference)).max() > 1e-5
  reward_features, _ = method.reward_and_clean_features(ctx, reward_images, images)
  meta = method.meta_step(ctx, reward_features, reward_labels,
                          mix_rows(targets, ctx.mix.mix))
  assert rel_err(meta.reward.grad_eps, reference) < 1e-5
  expected_w = head_lib.weights_from_gradient(reference, 'noise')
  np.testing.assert_allclose(out.example_weights / N, expected_w, rtol=0, atol=1e-5)
  assert float(jnp.sum(expected_w)) > 0.5        # not all clipped: the check means something
  # Not the two-pass weights (clean forward, same reward batch): the forms really differ.
  clean = FSR(one_pass_config(nesterov, label_smoothing=smoothing, mixup_alpha=0.0))
  clean_ctx = setup[0]
  two_pass = clean.weights(clean_ctx, ms, {}, key).example_weights
  assert rel_err(out.example_weights, two_pass) > 1e-2


def test_one_pass_update_is_grad_of_weighted_mixed_loss(network):
  """The actual update: jax.grad of the weighted mixed loss + re-labeling, through the optimiser."""
  _, state, _, images, _, tx = network
  method, ctx, ms, key = one_pass_case(network)
  out = method.weights(ctx, ms, {}, key)
  lam, perm = float(ctx.mix.mix.lam), np.asarray(ctx.mix.mix.perm)
  mixed = lam * images + (1 - lam) * images[perm]
  w = out.example_weights / N
  onehot = jax.nn.one_hot(ctx.labels, C)
  seen = (np.arange(N) < 6)[:, None]
  relabel = jnp.where(seen, ms['pred'][:N], jax.nn.softmax(ctx.logits))
  soft = lam * relabel + (1 - lam) * relabel[perm]
  losses = mixed_loss_vec(ctx, mixed, onehot, lam, perm)

  def total(params):
    logits = ctx.apply_fn(params, ctx.batch_stats, mixed, True)[0][0]
    return (jnp.sum(w * losses(params))
            + 2.0 * jnp.mean(head_lib.soft_cross_entropy(logits, soft)))

  got = combined_gradient(ctx, out)
  want = jax.grad(total)(state.params)
  assert rel_err(flat(got), flat(want)) < 1e-5
  got_update, _ = tx.update(got, state.opt_state, state.params)
  want_update, _ = tx.update(want, state.opt_state, state.params)
  assert rel_err(flat(got_update), flat(want_update)) < 1e-5
  np.testing.assert_allclose(out.metrics['weighted_loss'], jnp.sum(w * losses(state.params)),
                             rtol=1e-5)


def test_one_pass_train_step_runs_one_mixed_forward(network):
  """The shared step with the hook: params, BatchNorm statistics and loss all from x~."""
  model, state, batch, _, _, tx = network
  method = FSR(one_pass_config())
  ms = fsr_state(method, state.params)
  rng = np.random.default_rng(11)
  ubatch = {'image': jnp.asarray(rng.integers(0, 256, (N, 8, 8, 3)), jnp.uint8),
            'label': batch['label'], 'index': batch['index']}
  aug = ml_collections.ConfigDict({'crop': 'pad', 'crop_padding': 1, 'flip': True})
  mean, std = jnp.full((3,), 0.5), jnp.full((3,), 0.25)
  start = state.replace(method_state=ms)
  step = jax.jit(make_train_step(model, method, tx, lambda s: jnp.float32(0.05), aug, mean, std,
                                 C))
  new, output = step(start, ubatch)
  assert bool(output.finite)

  # By hand: the step's keys, the augmented batch, MixUp from split(method key)[1].
  keys = jax.random.split(jax.random.fold_in(start.rng, start.step), 4)
  clean = augment_batch(ubatch['image'], keys[0], crop_padding=1, flip=True, mean=mean, std=std,
                        train=True)
  lam, perm = method.draw_mixup(jax.random.split(keys[3])[1], N, jnp.float32)
  mixed = lam * clean + (1 - lam) * clean[perm]
  apply_fn = make_apply_fn(model, keys[2])
  (logits, _), stats = apply_fn(state.params, state.batch_stats, mixed, True)
  w = output.example_weights / N
  onehot = jax.nn.one_hot(ubatch['label'], C)
  seen = (np.arange(N) < 6)[:, None]
  relabel = jnp.where(seen, ms['pred'][:N], jax.nn.softmax(logits))
  soft = lam * relabel + (1 - lam) * relabel[perm]

  def total(params):
    z = apply_fn(params, state.batch_stats, mixed, True)[0][0]
    mixed_loss = (lam * head_lib.soft_cross_entropy(z, onehot)
                  + (1 - lam) * head_lib.soft_cross_entropy(z, onehot[perm]))
    return jnp.sum(w * mixed_loss) + 2.0 * jnp.mean(head_lib.soft_cross_entropy(z, soft))

  updates, _ = tx.update(jax.grad(total)(state.params), state.opt_state, state.params)
  want = optax.apply_updates(state.params, updates)
  assert rel_err(flat(new.params), flat(want)) < 1e-5
  assert rel_err(flat(jax.tree.map(jnp.subtract, new.params, state.params)), flat(updates)) < 1e-4
  # BatchNorm running statistics come from the mixed forward.
  assert rel_err(flat(new.batch_stats), flat(stats)) < 1e-5
  np.testing.assert_allclose(output.metrics['train_loss'],
                             jnp.mean(cross_entropy(logits, ubatch['label'])), rtol=1e-5)


def test_one_pass_scores_and_relabeling_by_hand(network):
  """Meta-margin score (mixed loss at theta minus the clean images' loss at theta*, as the
  reference code) and re-labeling on the mixed forward, against numpy (float64)."""
  _, state, _, images, _, _ = network
  method, ctx, ms, key = one_pass_case(network)
  out = method.weights(ctx, ms, {}, key)
  f64 = lambda x: np.asarray(x, np.float64)
  lam, perm = float(ctx.mix.mix.lam), np.asarray(ctx.mix.mix.perm)
  z, h, y = f64(ctx.logits), f64(ctx.features), np.asarray(ctx.labels)
  head, trace = state.params['head'], head_trace(state.opt_state)

  def log_softmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))

  onehot = np.eye(C)[y]
  t = lam * onehot + (1 - lam) * onehot[perm]               # the mixed target
  p = np.exp(log_softmax(z))
  e = p - t
  kernel = f64(head['kernel']) - META_LR * (
      h.T @ e / N + WEIGHT_DECAY * f64(head['kernel']) + MOMENTUM * f64(trace['kernel']))
  bias = f64(head['bias']) - META_LR * (
      e.mean(0) + WEIGHT_DECAY * f64(head['bias']) + MOMENTUM * f64(trace['bias']))
  before = -(t * log_softmax(z)).sum(-1)
  ce = lambda labels: -log_softmax(z)[np.arange(N), labels]
  np.testing.assert_allclose(before, lam * ce(y) + (1 - lam) * ce(y[perm]), rtol=1e-10)
  # "After": the clean (un-mixed) images through the network at theta* (only the head moved),
  # in one training-mode forward with the reward batch (the reference's look-ahead forward).
  star = {'kernel': jnp.asarray(kernel, jnp.float32), 'bias': jnp.asarray(bias, jnp.float32)}
  reward_images, _ = method.draw_reward_batch(ms, jax.random.split(key)[0])
  both = jnp.concatenate([reward_images, images])
  z_star = f64(ctx.apply_fn(with_head(state.params, star), ctx.batch_stats, both, True)[0][0])
  after = -log_softmax(z_star[Q:])[np.arange(N), y]
  margin = before - after
  # Not the mixed images' drop (the one-pass form's margin before the reference was followed).
  mixed_after = -(t * log_softmax(h @ kernel + bias)).sum(-1)
  assert np.abs(mixed_after - after).max() > 1e-2

  seen = np.arange(N) < 6
  new = out.method_state
  old_score = f64(ms['score'])
  np.testing.assert_allclose(new['score'][:N], np.where(seen, 0.9 * old_score[:N] + 0.1 * margin,
                                                        margin), rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(new['score'][N:], ms['score'][N:])
  np.testing.assert_array_equal(new['visits'], np.asarray(ms['visits']) + (np.arange(20) < N))
  np.testing.assert_allclose(out.metrics['fsr_meta_margin'], margin.mean(), rtol=1e-4, atol=1e-7)
  # Prediction EMA fed the mixed forward's predictions; re-labeling target = the EMA before the
  # step (this prediction on a first visit), mixed like the labels.
  old_pred = f64(ms['pred'])
  np.testing.assert_allclose(new['pred'][:N], np.where(seen[:, None],
                                                       0.1 * old_pred[:N] + 0.9 * p, p),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(new['pred'][N:], ms['pred'][N:])
  relabel = np.where(seen[:, None], old_pred[:N], p)
  soft = lam * relabel + (1 - lam) * relabel[perm]
  w = f64(out.example_weights) / N
  np.testing.assert_allclose(out.logit_cotangent, w[:, None] * e + 2.0 / N * (p - soft),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(out.metrics['fsr_relabel_loss'],
                             (-(soft * log_softmax(z)).sum(-1)).mean(), rtol=1e-5)
  np.testing.assert_allclose(out.metrics['weighted_loss'], (w * before).sum(), rtol=1e-5)


def test_one_pass_run_compiles_once_across_epochs():
  """Three epochs of one-pass FSR (two dictionary refreshes): one compiled step."""
  c = fsr_config(dictionary_size=50, reward_batch_size=20, warmup_epochs=1,
                 mixup_form='one_pass')
  c.synthetic.num_train, c.batch_size = 200, 50
  data = build_data(c)
  run = Run(c, data, data_mesh())
  state = run.init_state()
  step = 0
  for epoch in range(3):
    for _ in range(run.steps_per_epoch):
      result = run.run_step(state, run.batch(step), None)
      assert result.finite
      state = result.state
      step += 1
    state = state.replace(method_state=run.method.on_epoch_end(state.method_state, epoch + 1,
                                                               data))
  assert run.step_fn(None)._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.method_state['epoch']) == 3
  assert int(np.sum(state.method_state['visits'])) == step * c.batch_size
  metrics = result.output.metrics
  assert float(metrics['fsr_reweighting']) == 1.0
  for key in ('weighted_loss', 'fsr_relabel_loss', 'fsr_meta_margin'):
    assert np.isfinite(float(metrics[key])), key


def test_mixup_form_config_and_hook_default():
  assert base_config.get_config().fsr.mixup_form == 'two_pass'
  c = fsr_config(mixup_form='once')
  with pytest.raises(ConfigError, match=r"config\.fsr\.mixup_form='once'.*'two_pass', 'one_pass'"):
    config_check.validate(c)
  with pytest.raises(ConfigError, match='mixup_form'):
    create_fsr(c)
  c = fsr_config(mixup_form='one_pass', score_before='clean')
  with pytest.raises(ConfigError, match='config.fsr.score_before'):
    config_check.validate(c)
  c.fsr.mixup_alpha = 0.0            # MixUp off: both forms are the same step
  config_check.validate(c)
  bad = fsr_config(mixup_form='one_pass', mixup_losses='weighted')
  with pytest.raises(ConfigError, match=r"config\.fsr\.mixup_losses='weighted'.*two_pass"):
    config_check.validate(bad)
  bad = fsr_config()
  bad.fsr.mixup_losses = 'clean'
  with pytest.raises(ConfigError, match=r"config\.fsr\.mixup_losses='clean'.*'all', 'weighted'"):
    config_check.validate(bad)
  # The hook is the identity for every other method, for two-pass and for MixUp off.
  x = jnp.ones((4, 8, 8, 3))
  for method in (Method(), FSR(fsr_config()), FSR(c)):
    images, info = method.prepare_images(x, jax.random.PRNGKey(0))
    assert images is x and info is None


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


def test_reward_batch_follows_the_training_crop():
  """Under augment.crop='resized' the reward batch is random resized crops of crop_size, as
  the training batch, not the pad crop of the stored images' size."""
  c = fsr_config(dictionary_size=2 * C, reward_batch_size=Q)
  c.augment.crop, c.augment.crop_size = 'resized', 6
  rng = np.random.default_rng(0)
  state = {'dict_ids': jnp.zeros((C, 2), jnp.int32),
           'dict_images': jnp.asarray(rng.integers(0, 256, (C, 2, 8, 8, 3)), jnp.uint8),
           'image_mean': jnp.full((3,), 0.4), 'image_std': jnp.full((3,), 0.2)}
  key = jax.random.PRNGKey(3)
  images, rows = FSR(c).draw_reward_batch(state, key)
  assert images.shape == (Q, 6, 6, 3)
  slot_rng, aug_rng = jax.random.split(key)
  _, cols = dict_lib.reward_slots(slot_rng, C, 2, Q)
  expected = augment_resized_batch(state['dict_images'][rows, cols], aug_rng,
                                   crop=resized_crop_of(c.augment), flip=c.augment.flip,
                                   mean=state['image_mean'], std=state['image_std'])
  np.testing.assert_array_equal(images, expected)
  c.augment.crop = 'pad'   # the pad crop keeps the stored size
  assert FSR(c).draw_reward_batch(state, key)[0].shape == (Q, 8, 8, 3)


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
      result = run.run_step(state, batch, None)
      state = result.state
      step += 1
      if epoch >= c.fsr.warmup_epochs:
        w = np.asarray(result.output.example_weights)
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
    ('mixup_lambda', 'beta', 'mixup_lambda'),
    ('relabel_target', 'probs', 'relabel_target'),
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
  c = importlib.import_module(f'famus_jax.presets.{name}').get_config()
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
