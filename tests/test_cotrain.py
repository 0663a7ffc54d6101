"""Co-trained pair with pseudo-clean meta sets (FaMUS supplement Alg. 2, first part).

Each check compares the pair's run (`famus_jax.train.cotrain_run.CoTrainedRun`)
with a direct computation: which examples the meta batches hold, the division
against a separate forward pass and `clean_probability`, the ensemble
accuracy, the warm-up update against jax.grad of the mean cross-entropy, and
a SIGKILLed run against an uninterrupted one (bitwise). One run object
(module fixture) serves the in-process checks, so its steps compile once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from famus_jax import config_check
from famus_jax.cotrain import division
from famus_jax.cotrain import pair as pair_lib
from famus_jax.data import augment_batch, build_data
from famus_jax.errors import ConfigError
from famus_jax.presets import tiny
from famus_jax.train.checkpoint import Checkpointer, run_fingerprint
from famus_jax.train.cotrain_run import CoTrainedRun
from famus_jax.train.logbook import read_metrics
from famus_jax.train.run import TrainingRun
from famus_jax.train.trainer import create_run, data_mesh
from tests.test_trainer import last_json, run_child

# 160 training examples, batch 16: 10 steps per epoch; warm-up is epoch 0.
OVERRIDES = {'method': 'mwnet', 'meta_set': 'pseudo_clean', 'num_meta': 0, 'train_subset': 160,
             'cotrain.warmup_epochs': 1}


def pair_config(overrides=None, **fields):
  """The tiny preset with `overrides` (default OVERRIDES) and then `fields`."""
  config = tiny.get_config()
  config.update_from_flattened_dict({**(OVERRIDES if overrides is None else overrides),
                                     **fields})
  return config


def validated_run(config):
  """The run object of a validated config (its data built here)."""
  config_check.validate(config)
  return create_run(config, build_data(config), data_mesh())


@pytest.fixture(scope='module')
def pair():
  run = validated_run(pair_config())
  assert isinstance(run, CoTrainedRun) and run.steps_per_epoch == 10
  # The loop's interface, of the pair and of its members' `Run`.
  assert isinstance(run, TrainingRun) and isinstance(run.member, TrainingRun)
  return run


def member_batches(run, state, batch):
  """Both members' batch dicts, each with the pre-step partner."""
  return (run.member_batch(state, batch, 0, state.b)[0],
          run.member_batch(state, batch, 1, state.a)[0])


def copy_tree(tree):
  return jax.tree.map(jnp.copy, tree)


def direct_logits(run, params, batch_stats, images):
  x = augment_batch(images, jax.random.PRNGKey(0), crop_padding=0, flip=False,
                    mean=run.data.mean, std=run.data.std, train=False)
  return run.model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)


def test_meta_batches_cross_networks_and_follow_the_oracle_split(pair):
  run, data = pair, pair.data
  clean = ~run.is_noisy
  ids = np.arange(run.num_train)
  mask_a = clean                      # the oracle: a's set is exactly the clean examples
  mask_b = clean & (ids % 2 == 0)     # another set, so the direction of the exchange shows
  state = run.init_state().replace(pseudo_clean_a=jnp.asarray(mask_a),
                                   pseudo_clean_b=jnp.asarray(mask_b))
  seen_a, seen_b = set(), set()
  first = run.steps_per_epoch * run.config.cotrain.warmup_epochs
  for step in range(first, first + 20):
    batch = run.batch(step)
    assert not batch.warmup
    meta_a, meta_b = run.meta_indices(state, step)
    assert len(meta_a) == len(meta_b) == run.config.meta_batch_size
    assert mask_b[meta_a].all()          # a's meta batch: b's set
    assert mask_a[meta_b].all()          # b's meta batch: a's set
    assert clean[meta_b].all()           # the oracle set gives clean meta batches only
    seen_a.update(meta_a.tolist())
    seen_b.update(meta_b.tolist())
    dict_a, dict_b = member_batches(run, state, batch)
    for part, meta, index in ((dict_a, meta_a, batch.index_a), (dict_b, meta_b, batch.index_b)):
      np.testing.assert_array_equal(part['meta_image'], data.train_images[meta])
      np.testing.assert_array_equal(part['meta_label'], data.train_labels[meta])  # given labels
      np.testing.assert_array_equal(part['index'], index)
  assert any(ids[i] % 2 for i in seen_b)     # b's meta ids reach beyond b's own set
  assert not any(ids[i] % 2 for i in seen_a)
  assert not np.array_equal(run.batch(first).index_a, run.batch(first).index_b)

  # The step really trains each member on those batches: a direct step on copies agrees.
  batch = run.batch(first)
  dict_a, dict_b = member_batches(run, state, batch)
  direct_a, _ = run.member.step_fn(None)(copy_tree(state.a), dict_a)
  direct_b, _ = run.member.step_fn(None)(copy_tree(state.b), dict_b)
  result = run.run_step(state, batch, None)
  assert result.finite and result.dispatch == (None, None)
  for got, want in ((result.state.a, direct_a), (result.state.b, direct_b)):
    for x, y in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
      np.testing.assert_array_equal(x, y)
  assert 'meta_loss' in result.output.metrics and 'b_meta_loss' in result.output.metrics


def test_warmup_step_is_plain_cross_entropy(pair):
  run, cfg = pair, pair.config
  state = run.init_state()
  spe = run.steps_per_epoch
  assert [run.batch(s).warmup for s in (0, spe - 1, spe, spe + 1)] == [True, True, False, False]
  batch = run.batch(0)
  assert batch.warmup
  dict_a, dict_b = member_batches(run, state, batch)
  assert 'meta_image' not in dict_a
  expected = []
  for member, part in ((state.a, dict_a), (state.b, dict_b)):
    aug_rng, _, dropout_rng, _ = jax.random.split(jax.random.fold_in(member.rng, member.step), 4)
    x = augment_batch(part['image'], aug_rng, crop_padding=cfg.augment.crop_padding,
                      flip=cfg.augment.flip, mean=run.data.mean, std=run.data.std, train=True)

    def mean_ce(params, member=member, x=x, part=part, dropout_rng=dropout_rng):
      (logits, _), _ = run.model.apply(
          {'params': params, 'batch_stats': member.batch_stats}, x, train=True,
          return_features=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, part['label']))

    grads = jax.jit(jax.grad(mean_ce))(member.params)
    updates, _ = run.tx.update(grads, member.opt_state, member.params)
    expected.append((optax.apply_updates(member.params, updates),
                     copy_tree(member.method_state)))
  result = run.run_step(state, batch, None)
  assert result.finite and result.dispatch == (None, None)
  assert 'meta_loss' not in result.output.metrics
  for got, (params, method_state) in zip((result.state.a, result.state.b), expected):
    assert int(got.step) == 1
    for x, y in zip(jax.tree.leaves(got.params), jax.tree.leaves(params)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree.leaves(got.method_state), jax.tree.leaves(method_state)):
      np.testing.assert_array_equal(x, y)   # the meta model does not move in warm-up


def trained_pair(run, steps):
  state = run.init_state()
  last = None
  for step in range(steps):
    result = run.run_step(state, run.batch(step), last)
    state, last = result.state, result.dispatch
  return state


def test_division_at_an_epoch_end_matches_a_direct_computation(pair, monkeypatch):
  run, data, cfg = pair, pair.data, pair.config.cotrain
  state = trained_pair(run, 4)
  fed = []

  def recording(losses, *args):
    fed.append(np.array(losses))
    return division.clean_probability(losses, *args)

  monkeypatch.setattr(pair_lib, 'clean_probability', recording)
  before = run.on_epoch_end(state, cfg.warmup_epochs - 1)
  assert before.events == () and int(before.state.division_epoch) == -1
  end = run.on_epoch_end(before.state, cfg.warmup_epochs)
  new = end.state
  assert len(fed) == 2 and int(new.division_epoch) == cfg.warmup_epochs
  (event,) = end.events
  assert event.name == 'division'
  clean = ~run.is_noisy
  for losses, member, prob, mask, prefix in (
      (fed[0], new.a, new.clean_prob_a, new.pseudo_clean_a, 'a_'),
      (fed[1], new.b, new.clean_prob_b, new.pseudo_clean_b, 'b_')):
    logits = direct_logits(run, member.params, member.batch_stats, data.train_images)
    direct = optax.softmax_cross_entropy_with_integer_labels(logits, data.train_labels)
    assert losses.shape == (run.num_train,)
    np.testing.assert_allclose(losses, direct, rtol=1e-5, atol=1e-6)
    c = division.clean_probability(losses, cfg.gmm_max_iter, cfg.gmm_tol, cfg.gmm_reg_covar)
    np.testing.assert_array_equal(np.asarray(prob), c.astype(np.float32))
    mask = np.asarray(mask)
    assert (c > cfg.clean_threshold).sum() >= run.min_pseudo_clean  # no top-k fallback here
    np.testing.assert_array_equal(mask, c > cfg.clean_threshold)
    hits = int((mask & clean).sum())
    assert event.values[f'{prefix}size'] == mask.sum()
    assert event.values[f'{prefix}precision'] == pytest.approx(hits / mask.sum())
    assert event.values[f'{prefix}recall'] == pytest.approx(hits / clean.sum())
  assert not np.array_equal(np.asarray(new.pseudo_clean_a), np.asarray(new.pseudo_clean_b))
  # The next step's meta ids are read from the new masks.
  meta_a, meta_b = run.meta_indices(new, run.steps_per_epoch)
  assert np.asarray(new.pseudo_clean_b)[meta_a].all()
  assert np.asarray(new.pseudo_clean_a)[meta_b].all()


def test_pseudo_clean_mask_falls_back_to_the_top_k():
  c = np.array([0.1, 0.9, 0.3, 0.3, 0.2, 0.6])
  np.testing.assert_array_equal(pair_lib.pseudo_clean_mask(c, 0.5, 2), c > 0.5)
  np.testing.assert_array_equal(pair_lib.pseudo_clean_mask(c, 0.5, 3),
                                [False, True, True, False, False, True])  # tie: lower index


def test_ensemble_evaluation_is_the_accuracy_of_the_mean_logits(pair):
  run, data = pair, pair.data
  state = trained_pair(run, 3)
  scores = run.evaluate(state)
  logits_a = direct_logits(run, state.a.params, state.a.batch_stats, data.test_images)
  logits_b = direct_logits(run, state.b.params, state.b.batch_stats, data.test_images)
  mean = (logits_a + logits_b) / 2
  labels = data.test_labels
  assert scores['test_accuracy'] == np.mean(np.argmax(mean, -1) == labels)
  assert scores['a_test_accuracy'] == np.mean(np.argmax(logits_a, -1) == labels)
  assert scores['b_test_accuracy'] == np.mean(np.argmax(logits_b, -1) == labels)
  loss = np.mean(optax.softmax_cross_entropy_with_integer_labels(mean, labels))
  assert scores['test_loss'] == pytest.approx(float(loss), rel=1e-5)


def killed_and_resumed(tmp_path, overrides, kill_after: int, resume_step: int):
  """(summary of an uninterrupted child run, summary of one SIGKILLed after `kill_after` and rerun).

  The three children use the test session's compilation cache (tests/conftest.py): programs
  this process or an earlier child compiled are loaded, not compiled again.
  """
  straight = last_json(run_child(tmp_path / 'straight', overrides).stdout)
  killed = run_child(tmp_path / 'resumed', overrides, '--kill-after-step', str(kill_after),
                     check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not (tmp_path / 'resumed' / 'summary.json').exists()
  resumed_proc = run_child(tmp_path / 'resumed', overrides)
  assert f'Resumed from the checkpoint at step {resume_step}' in resumed_proc.stdout
  return straight, last_json(resumed_proc.stdout)


def assert_final_checkpoints_equal(run, tmp_path, step: int) -> list:
  """The checkpoints of `step` of killed_and_resumed's two runs hold the same state, bitwise.

  Returns the two restored states (straight, resumed)."""
  template = run.init_state()
  states = []
  for name in ('straight', 'resumed'):
    ckpt = Checkpointer(str(tmp_path / name), 2)
    states.append(ckpt.restore(template, step)[0])
    ckpt.close()
  for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(x, y)
  return states


def test_sigkill_and_resume_matches_an_uninterrupted_pair_run(pair, tmp_path):
  overrides = {**OVERRIDES, 'num_steps': 24, 'checkpoint_every': 12, 'eval_every': 12}
  straight, resumed = killed_and_resumed(tmp_path, overrides, 22, 12)
  for key in ('best_test_accuracy', 'last_test_accuracy', 'last_test_loss', 'steps',
              'mean_weight_clean', 'mean_weight_noisy'):
    assert resumed[key] == straight[key], key
  # Both members and the divisions, bitwise.
  states = assert_final_checkpoints_equal(pair, tmp_path, 24)
  assert int(states[0].division_epoch) == 2
  # Among them each member's per-example record (famus_jax/train/record.py), every draw counted.
  for member in ('a', 'b'):
    records = [getattr(state, member).record for state in states]
    assert int(records[0].seen.sum()) >= 24 * pair.config.batch_size
    for field in ('weight_sum', 'seen', 'last_pred'):
      np.testing.assert_array_equal(getattr(records[0], field), getattr(records[1], field))
  divisions = [[e for e in read_metrics(str(tmp_path / name)) if e['event'] == 'division']
               for name in ('straight', 'resumed')]
  assert [e['step'] for e in divisions[0]] == [10, 20]
  assert divisions[0] == divisions[1]


def test_config_errors_name_the_field():
  for method in ('erm', 'fsr'):
    with pytest.raises(ConfigError, match=r"config\.meta_set='pseudo_clean'.*config\.method="
                       rf"'{method}'.*\['dividemix', 'famus', 'l2r', 'mwnet'\]"):
      config_check.validate(pair_config(method=method))
  with pytest.raises(ConfigError, match=r"config\.meta_set='noisy' is not one of "
                     r"\['clean', 'pseudo_clean'\]"):
    config_check.validate(pair_config(meta_set='noisy'))
  with pytest.raises(ConfigError, match=r'config\.cotrain\.clean_threshold=1\.5 is outside'):
    config_check.validate(pair_config(**{'cotrain.clean_threshold': 1.5}))
  with pytest.raises(ConfigError, match=r'config\.cotrain\.warmup_epochs=0 must be >= 1'):
    config_check.validate(pair_config(**{'cotrain.warmup_epochs': 0}))
  with pytest.raises(ConfigError, match=r"the co-trained pair \(config\.meta_set='pseudo_clean', "
                     r"config\.method='mwnet'\) runs in one process only: "
                     r'config\.distributed\.num_processes=2 must be 1'):
    config_check.validate(pair_config(**{'distributed.num_processes': 2,
                                         'distributed.process_id': 0}))
  config_check.validate(pair_config(method='famus'))
  config_check.validate(pair_config(method='l2r'))
  config_check.validate(pair_config(method='erm', meta_set='clean'))


def test_fingerprint_holds_the_new_fields(pair):
  fields = run_fingerprint(pair.config, pair.data)['config']
  assert fields['meta_set'] == 'pseudo_clean'
  for name in ('warmup_epochs', 'gmm_max_iter', 'gmm_tol', 'gmm_reg_covar', 'clean_threshold',
               'min_pseudo_clean'):
    assert f'cotrain.{name}' in fields
