"""The co-trained pair's semi-supervised step (DivideMix's MixMatch; FaMUS supplement Alg. 2).

Each check compares the library with an independent computation: the mixed
rows against numpy refinement / co-guessing, the row losses against
DivideMix's loss written out, the DivideMix step's update against jax.grad
of that loss through the network, MW-Net's exact meta gradient on the mixed
batch against reverse-over-reverse autodiff through the virtual step, the
host-side labelled / unlabelled split against the partner's division, and a
SIGKILLed DivideMix pair against an uninterrupted one.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from famus_jax import config_check
from famus_jax.cotrain import mixmatch
from famus_jax.cotrain import pair as pair_lib
from famus_jax.cotrain import semi_supervised as semi_lib
from famus_jax.data import augment_batch
from famus_jax.errors import ConfigError
from famus_jax.method_registry import create_method
from famus_jax.train.cotrain_run import CoTrainedRun
from famus_jax.train.step import combined_gradient, make_context_fn
from famus_jax.train.trainer import create_run, data_mesh
from tests.test_cotrain import (assert_final_checkpoints_equal, killed_and_resumed,
                                pair_config, validated_run)

# 512 synthetic training examples, batch 16: 32 steps per epoch; warm-up is epoch 0.
OVERRIDES = {'method': 'dividemix', 'num_meta': 0, 'cotrain.warmup_epochs': 1,
             'cotrain.unlabelled_batch_size': 8, 'cotrain.rampup_epochs': 2.0}
SEMI = semi_lib.SemiSupervised(temperature=0.5, alpha=4.0, lambda_u=25.0, warmup_epochs=1,
                               rampup_epochs=2.0, penalty_weight=1.0, steps_per_epoch=10)


def semi_config(**fields):
  return pair_config(OVERRIDES, **fields)


@pytest.fixture(scope='module')
def dividemix():
  run = validated_run(semi_config())
  assert isinstance(run, CoTrainedRun) and run.semi is not None
  return run


def sharpen_np(p, t):
  q = p ** (1.0 / t)
  return q / q.sum(-1, keepdims=True)


def softmax_np(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_training_batch_refines_co_guesses_and_mixes():
  rng = np.random.default_rng(0)
  b, u, c = 3, 2, 4
  batch = {'image': rng.integers(0, 256, (b, 2, 2, 1), dtype=np.uint8),
           'label': np.array([0, 3, 1], np.int32), 'index': np.array([7, 8, 9], np.int32),
           'clean_prob': np.array([0.9, 0.2, 0.5], np.float32),
           'unlabelled_image': rng.integers(0, 256, (u, 2, 2, 1), dtype=np.uint8),
           'unlabelled_label': np.array([2, 2], np.int32),
           'unlabelled_index': np.array([1, 4], np.int32)}
  w_own, w_partner = rng.normal(size=(4, c)), rng.normal(size=(4, c))

  def augment(images, key):  # a view: the image plus key-dependent noise
    noise = jax.random.normal(key, images.shape) * 0.1
    return images.astype(jnp.float32) / 255.0 + noise

  def linear(w):
    return lambda x: x.reshape(x.shape[0], -1) @ jnp.asarray(w, jnp.float32)

  key = jax.random.PRNGKey(3)
  soft = SEMI.training_batch(linear(w_own), linear(w_partner), batch, augment, key)
  keys = jax.random.split(key, 5)
  views = [np.asarray(augment(x, k)) for x, k in zip(
      (batch['image'], batch['image'], batch['unlabelled_image'], batch['unlabelled_image']),
      keys[:4])]
  probs = {name: [softmax_np(v.reshape(len(v), -1) @ w) for v in views]
           for name, w in (('own', w_own), ('partner', w_partner))}
  w = batch['clean_prob'][:, None]
  t_x = sharpen_np(w * np.eye(c)[batch['label']] + (1 - w) * (probs['own'][0] + probs['own'][1])
                   / 2, 0.5)
  t_u = sharpen_np((probs['own'][2] + probs['own'][3] + probs['partner'][2]
                    + probs['partner'][3]) / 4, 0.5)
  rows = np.concatenate(views)
  targets = np.concatenate([t_x, t_x, t_u, t_u])
  lam = float(soft.lam)
  lam_rng = jax.random.split(keys[4])[0]
  assert lam == pytest.approx(max(float(jax.random.beta(lam_rng, 4.0, 4.0)),
                                  1 - float(jax.random.beta(lam_rng, 4.0, 4.0))))
  perm = np.asarray(jax.random.permutation(jax.random.split(keys[4])[1], len(rows)))
  np.testing.assert_allclose(soft.images, lam * rows + (1 - lam) * rows[perm], atol=1e-6)
  np.testing.assert_allclose(soft.targets, lam * targets + (1 - lam) * targets[perm],
                             atol=1e-6)
  np.testing.assert_array_equal(soft.unlabelled, [False] * 6 + [True] * 4)
  np.testing.assert_array_equal(soft.indices, [7, 8, 9, 7, 8, 9, 1, 4, 1, 4])
  np.testing.assert_array_equal(soft.labels, [0, 3, 1, 0, 3, 1, 2, 2, 2, 2])
  assert soft.num_labelled == 6


def test_row_losses_average_to_dividemix_loss():
  rng = np.random.default_rng(1)
  n_x, n_u, c = 6, 4, 5
  logits = jnp.asarray(rng.normal(size=(n_x + n_u, c)), jnp.float32)
  targets = jnp.asarray(softmax_np(rng.normal(size=(n_x + n_u, c))), jnp.float32)
  soft = semi_lib.SoftBatch(images=jnp.zeros((n_x + n_u, 1)), targets=targets,
                            unlabelled=jnp.arange(n_x + n_u) >= n_x, labels=None, indices=None,
                            lam=jnp.float32(0.7), num_labelled=n_x)
  lambda_u = 7.0
  rows = SEMI.row_losses(logits, soft, lambda_u)
  # DivideMix written out: L_X mean soft CE over X', L_U mean squared error over U' and classes.
  p = softmax_np(np.asarray(logits, np.float64))
  t = np.asarray(targets, np.float64)
  l_x = -np.mean(np.sum(t[:n_x] * np.log(p[:n_x]), -1))
  l_u = np.mean((p[n_x:] - t[n_x:]) ** 2)
  assert float(jnp.mean(rows)) == pytest.approx(l_x + lambda_u * l_u, rel=1e-5)
  whole = mixmatch.semi_supervised_loss(logits[:n_x], targets[:n_x], logits[n_x:], targets[n_x:],
                                        lambda_u, 1.0)
  penalty = np.sum(0.2 * np.log(0.2 / p.mean(0)))
  assert float(SEMI.penalty(logits)) == pytest.approx(penalty, rel=1e-5)
  assert float(jnp.mean(rows) + SEMI.penalty(logits)) == pytest.approx(float(whole.total),
                                                                      rel=1e-5)


def test_rampup_of_the_unlabelled_weight():
  # steps_per_epoch 10, warm-up 1 epoch, ramp 2 epochs, lambda_u 25.
  got = [float(SEMI.unlabelled_weight(s)) for s in (0, 10, 15, 20, 30, 50)]
  np.testing.assert_allclose(got, [0.0, 0.0, 6.25, 12.5, 25.0, 25.0])


def semi_context(run, state, batch, use, preparation=None):
  """use(context, new batch_stats, rng) -> arrays, on the step's context; compiled as one
  program (eagerly, every op of the model would be compiled on its own)."""
  method = run.method
  cfg = run.config
  context = make_context_fn(run.model, method.uses_meta_set, run.lr_fn, cfg.augment,
                            run.member.mean, run.member.std, run.data.num_classes,
                            cfg.meta_bn_train_mode, prepare_images=method.prepare_images,
                            preparation=preparation or run.semi)
  return jax.jit(lambda s, b: use(*context(s, b)))(state, batch)


def step_state(run, steps):
  state, last = run.init_state(), None
  for step in range(steps):
    result = run.run_step(state, run.batch(step), last)
    state, last = result.state, result.dispatch
  return state


def test_dividemix_update_is_the_gradient_of_dividemix_loss(dividemix):
  run = dividemix
  spe = run.steps_per_epoch
  state = step_state(run, spe)  # the warm-up epoch; then a division so X and U differ
  state = run.on_epoch_end(state, 1).state
  step = spe + spe // 2
  state = state.replace(a=state.a.replace(step=jnp.int32(step)))
  batch = run.batch(step)
  part, rows = run.member_batch(state, batch, 0, state.b)

  def context_and_gradient(ctx, _, __):
    out = run.method.weights(ctx, state.a.method_state, part, None)
    return ctx.images, ctx.indices, combined_gradient(ctx, out,
                                                      jax.grad(run.semi.penalty)(ctx.logits))

  images, indices, got = semi_context(run, state.a, part, context_and_gradient)
  rng = jax.random.fold_in(state.a.rng, state.a.step)
  aug_rng, _, dropout_rng, _ = jax.random.split(rng, 4)
  # The mixed rows the step trains on, rebuilt outside the step.
  augment = jax.jit(functools.partial(augment_batch, crop_padding=run.config.augment.crop_padding,
                              flip=run.config.augment.flip, mean=run.member.mean,
                              std=run.member.std, train=True))

  def apply(params, stats, x, train):
    if train:
      return run.model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                             mutable=['batch_stats'], rngs={'dropout': dropout_rng})[0]
    return run.model.apply({'params': params, 'batch_stats': stats}, x, train=False)

  own = lambda x: apply(state.a.params, state.a.batch_stats, x, True)
  partner = lambda x: apply(state.b.params, state.b.batch_stats, x, False)
  soft = jax.jit(lambda p, r: run.semi.training_batch(own, partner, p, augment, r))(part, aug_rng)
  np.testing.assert_array_equal(np.asarray(images), np.asarray(soft.images))
  np.testing.assert_array_equal(np.asarray(indices), rows)
  lambda_u = float(mixmatch.linear_rampup(step / spe, 1, 2.0, run.config.cotrain.lambda_u))
  assert 0 < lambda_u < run.config.cotrain.lambda_u
  n_x = soft.num_labelled

  def dividemix_loss(params):
    logits = apply(params, state.a.batch_stats, soft.images, True)
    return mixmatch.semi_supervised_loss(logits[:n_x], soft.targets[:n_x], logits[n_x:],
                                         soft.targets[n_x:], lambda_u, 1.0).total

  want = jax.jit(jax.grad(dividemix_loss))(state.a.params)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6)
  # And the run's step applies exactly that gradient through the optimiser.
  updates, _ = run.tx.update(got, state.a.opt_state, state.a.params)
  expected = optax.apply_updates(state.a.params, updates)
  result = run.member.run_step(jax.tree.map(jnp.copy, state.a), part, None)
  for x, y in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)

  # BatchNorm running statistics: this member's guessing forwards (u^1, u^2, x^1, x^2, the
  # reference code's order) move them one after the other, then the mixed forward does.
  @jax.jit
  def stats_after(stats, x):
    return run.model.apply({'params': state.a.params, 'batch_stats': stats}, x, train=True,
                           mutable=['batch_stats'], rngs={'dropout': dropout_rng})[1]['batch_stats']

  keys = jax.random.split(aug_rng, 5)
  x, u = part['image'], part['unlabelled_image']
  stats = state.a.batch_stats
  for images, key in ((u, keys[2]), (u, keys[3]), (x, keys[0]), (x, keys[1])):
    stats = stats_after(stats, augment(images, key))
  stats = stats_after(stats, soft.images)
  for got_s, want_s in zip(jax.tree.leaves(result.state.batch_stats), jax.tree.leaves(stats)):
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-6)
  # guess_updates_bn=False: the mixed rows alone set them (and that is another result).
  off = dataclasses.replace(run.semi, guess_updates_bn=False)
  mixed_only = semi_context(run, state.a, part, lambda _, stats, __: stats, preparation=off)
  want_off = stats_after(state.a.batch_stats, soft.images)
  for got_s, want_s in zip(jax.tree.leaves(mixed_only), jax.tree.leaves(want_off)):
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-6)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(stats), jax.tree.leaves(want_off))) > 1e-3


def test_host_split_follows_the_partner_division(dividemix):
  run, data = dividemix, dividemix.data
  clean = ~run.is_noisy
  n = run.num_train
  prob_a = np.where(clean, 0.9, 0.1).astype(np.float32)          # a's division: the oracle
  prob_b = np.linspace(0, 1, n).astype(np.float32)               # b's: another split
  state = run.init_state().replace(clean_prob_a=jnp.asarray(prob_a),
                                   clean_prob_b=jnp.asarray(prob_b))
  step = run.steps_per_epoch + 3
  batch = run.batch(step)
  assert not batch.warmup
  part_a, rows_a = run.member_batch(state, batch, 0, state.b)
  part_b, rows_b = run.member_batch(state, batch, 1, state.a)
  for part, rows, partner_prob in ((part_a, rows_a, prob_b), (part_b, rows_b, prob_a)):
    idx, uidx = np.asarray(part['index']), np.asarray(part['unlabelled_index'])
    assert (partner_prob[idx] > 0.5).all() and (partner_prob[uidx] <= 0.5).all()
    np.testing.assert_array_equal(part['clean_prob'], partner_prob[idx])
    np.testing.assert_array_equal(part['image'], data.train_images[idx])
    np.testing.assert_array_equal(part['unlabelled_image'], data.train_images[uidx])
    np.testing.assert_array_equal(rows, np.concatenate([idx, idx, uidx, uidx]))
    assert len(uidx) == run.config.cotrain.unlabelled_batch_size
  assert clean[np.asarray(part_b['index'])].all()   # b learns from a's (oracle) labelled part
  # The partner each member sees: a gets b's params, b gets a's as given.
  for x, y in zip(jax.tree.leaves(part_a['partner_params']), jax.tree.leaves(state.b.params)):
    assert x is y


def test_labelled_mask_falls_back_to_the_upper_half():
  c = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.95])
  np.testing.assert_array_equal(pair_lib.labelled_mask(c, 0.5, 2, 4), c > 0.5)
  # Too few pass (min 4): the upper half by c.
  np.testing.assert_array_equal(pair_lib.labelled_mask(c, 0.5, 4, 5),
                                [True, True, False, False, False, True])
  # Too many pass (max 2): the upper half too.
  np.testing.assert_array_equal(pair_lib.labelled_mask(c, 0.05, 1, 2),
                                [True, True, False, False, False, True])


# MW-Net with the papers' actual step: its weights are those of the updated weight net, so they
# carry the meta gradient the test checks.
MWNET_SEMI = {'cotrain.semi_supervised': True, 'meta_batch_size': 8,
              'meta.actual_step': 'recompute'}


@pytest.fixture(scope='module')
def mwnet_semi():
  return validated_run(semi_config(method='mwnet', meta_set='pseudo_clean', **MWNET_SEMI))


def test_mwnet_meta_gradient_on_the_mixed_batch_matches_reverse_over_reverse(mwnet_semi):
  run = mwnet_semi
  spe = run.steps_per_epoch
  state = step_state(run, spe)
  state = run.on_epoch_end(state, 1).state
  step = spe + 4
  state = state.replace(a=state.a.replace(step=jnp.int32(step)))
  part, _ = run.member_batch(state, run.batch(step), 0, state.b)
  assert part['meta_clean_prob'].shape == (8,)
  reference = create_method(semi_config(method='mwnet', meta_gradient='reverse_over_reverse',
                                        **{'meta.actual_step': 'recompute'}))

  def both(ctx, _, rng):
    return (ctx.images.shape[0], run.method.weights(ctx, state.a.method_state, part, rng),
            reference.weights(ctx, state.a.method_state, part, rng))

  rows, got, want = semi_context(run, state.a, part, both)
  assert rows == 2 * 16 + 2 * 8
  np.testing.assert_allclose(got.weights, want.weights, rtol=1e-4, atol=1e-7)
  for x, y in zip(jax.tree.leaves(got.method_state), jax.tree.leaves(want.method_state)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)
  assert not np.allclose(got.weights, got.weights[0])    # the weights do vary across rows


def test_famus_pair_with_semi_supervised_steps_runs(mwnet_semi):
  config = semi_config(method='famus', meta_set='pseudo_clean',
                       **{'cotrain.semi_supervised': True, 'meta_batch_size': 8})
  run = create_run(config, mwnet_semi.data, data_mesh())
  state = step_state(run, run.steps_per_epoch + 2)
  assert int(state.step) == run.steps_per_epoch + 2
  assert np.isfinite(np.asarray(jax.tree.leaves(state.a.params)[0])).all()


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match=r'config\.cotrain\.semi_supervised=True needs the '
                     r"co-trained pair.*config\.method='dividemix'"):
    config_check.validate(semi_config(method='mwnet', **{'cotrain.semi_supervised': True}))
  config_check.validate(semi_config(meta_set='pseudo_clean'))  # dividemix: either value
  with pytest.raises(ConfigError, match=r"config\.cotrain\.warmup_epochs=0 must be >= 1 with "
                     r"config\.method='dividemix'"):
    config_check.validate(semi_config(**{'cotrain.warmup_epochs': 0}))
  with pytest.raises(ConfigError, match=r'config\.cotrain\.sharpen_temperature=0\.0 is outside'):
    config_check.validate(semi_config(**{'cotrain.sharpen_temperature': 0.0}))


def test_sigkill_and_resume_matches_an_uninterrupted_dividemix_run(dividemix, tmp_path):
  overrides = {**OVERRIDES, 'num_steps': 40, 'checkpoint_every': 36, 'eval_every': 20}
  straight, resumed = killed_and_resumed(tmp_path, overrides, 38, 36)
  for key in ('best_test_accuracy', 'last_test_accuracy', 'last_test_loss', 'steps'):
    assert resumed[key] == straight[key], key
  assert_final_checkpoints_equal(dividemix, tmp_path, 40)


def test_presets_take_lambda_u_from_the_dividemix_table():
  """The co-training presets' lambda_u is DivideMix's for their noise (its appendix table)."""
  from famus_jax.presets import _dividemix, cifar10_pseudo_clean, cifar100_pseudo_clean
  c10, c100 = cifar10_pseudo_clean.get_config(), cifar100_pseudo_clean.get_config()
  assert (c10.noise_type, c10.noise_rate, c10.cotrain.lambda_u) == ('symmetric', 0.5, 25.0)
  assert (c100.noise_type, c100.noise_rate, c100.cotrain.lambda_u) == ('symmetric', 0.5, 150.0)
  assert _dividemix.lambda_u('cifar10', 'symmetric', 0.2) == 0.0
  assert _dividemix.lambda_u('cifar10', 'symmetric', 0.9) == 50.0
  assert _dividemix.lambda_u('cifar10', 'asymmetric', 0.4) == 0.0
  with pytest.raises(KeyError, match='no lambda_u'):
    _dividemix.lambda_u('cifar10', 'symmetric', 0.6)
