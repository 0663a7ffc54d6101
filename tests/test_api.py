"""The Python API (famus_jax/api.py) on a model defined here, not one of famus_jax.models.

The model is a user's Flax network with BatchNorm, wrapped by `Classifier`;
its layer names (backbone/Conv_0, ...) are outside famus_jax's naming scheme,
so FaMUS orders them by call. Checks: every method's step runs on it; exact
MW-Net's weights equal reverse-over-reverse autodiff's on the same model and
batch; FaMUS on every layer equals exact MW-Net; `Learner.step` reproduces
the trainer's loop (`fit`) bit for bit; `fit` on Fashion-MNIST arrays trains
and resumes; bad inputs give one clear error.
"""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

import famus_jax
from famus_jax.data import idx
from famus_jax.errors import ConfigError
from famus_jax.models import create_model
from famus_jax.train.checkpoint import Checkpointer

C = 5


class UserBackbone(nn.Module):
  """Two convolutions with BatchNorm and a third without, global average pooled."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(6, (3, 3))(x)))
    x = nn.Conv(8, (3, 3), strides=2)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    return nn.Conv(8, (3, 3))(x).mean(axis=(1, 2))


MODEL = famus_jax.Classifier(UserBackbone(), num_classes=C)
SMALL = dict(batch_size=16, meta_batch_size=16, eval_batch_size=20, num_steps=6,
             log_every=3, eval_every=3, checkpoint_every=3)


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (220, 8, 8, 3), dtype=np.uint8)
  true = rng.integers(0, C, 220)
  noisy = np.where(rng.random(220) < 0.4, rng.integers(0, C, 220), true)
  return famus_jax.arrays_data(x[:160], noisy[:160], num_classes=C, meta_images=x[160:200],
                               meta_labels=true[160:200], test_images=x[200:],
                               test_labels=true[200:], true_labels=true[:160])


def weights_after(learner, steps=2):
  state = learner.init_state()
  for step in range(steps):
    state, out = learner.step(state, learner.batch(step))
  return state, np.asarray(out.example_weights)


@pytest.mark.parametrize('method,fields', [
    ('erm', {}), ('l2r', {}), ('mlc', {}), ('random_weight', {}),
    ('famus', {}), ('famus', {'famus.base': 'mlc'}),  # FaMUS on L2R: tests/test_famus.py
    ('fsr', {'fsr.dictionary_size': 20, 'fsr.reward_batch_size': 10, 'fsr.warmup_epochs': 0}),
])
def test_every_method_steps_on_a_user_model(data, method, fields):
  learner = famus_jax.Learner(MODEL, data, method=method, **SMALL, **fields)
  state, w = weights_after(learner)
  assert w.shape == (16,) and np.all(np.isfinite(w)) and np.all(w >= 0)
  assert np.isfinite(learner.evaluate(state)['test_accuracy'])
  if method == 'famus':
    sets = learner.run.method.estimator.cached_layer_sets
    # Call order of the user's modules; candidates: the top quarter below the head (>= 2).
    assert sets.names[0] == 'backbone/Conv_0' and sets.names[-1] == 'head'
    assert sets.candidates == ('backbone/BatchNorm_1', 'backbone/Conv_2')
    assert sets.always_on == ('head',)


def test_exact_weights_equal_reverse_over_reverse_and_famus_on_every_layer(data):
  """MW-Net's production (JVP) weights = autodiff through the virtual step = FaMUS with every
  layer of the user's model on; all three on the same batches."""
  jvp = weights_after(famus_jax.Learner(MODEL, data, method='mwnet', **SMALL))[1]
  ror = weights_after(famus_jax.Learner(MODEL, data, method='mwnet', **SMALL,
                                        meta_gradient='reverse_over_reverse'))[1]
  every = weights_after(famus_jax.Learner(MODEL, data, method='famus', **SMALL,
                                          **{'famus.strategy': 'all'}))[1]
  np.testing.assert_allclose(jvp, ror, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(every, jvp, rtol=1e-4, atol=1e-6)
  assert np.std(jvp) > 1e-3   # the weights are not uniform: the comparison means something


@pytest.mark.parametrize('method', ['mwnet', 'fsr'])
def test_learner_steps_are_the_trainers(data, method, tmp_path):
  """Three Learner steps and `fit`'s checkpoint after three steps hold the same state, bitwise."""
  fields = dict(SMALL, num_steps=3)
  if method == 'fsr':
    fields.update({'fsr.dictionary_size': 20, 'fsr.reward_batch_size': 10})
  learner = famus_jax.Learner(MODEL, data, method=method, **fields)
  state, _ = weights_after(learner, 3)
  famus_jax.fit(MODEL, data, str(tmp_path), method=method, **fields)
  ckpt = Checkpointer(str(tmp_path), 2)
  saved = ckpt.restore(learner.init_state(), 3)[0]
  ckpt.close()
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)


FASHION = '/usr/share/datasets/fashion-mnist'


@pytest.mark.skipif(not os.path.isdir(FASHION), reason='needs dataset-fashion-mnist')
def test_fit_on_fashion_mnist_arrays_trains_and_resumes(tmp_path, capsys):
  train_images, train_labels = idx.read_idx_split(FASHION, 'train')
  test_images, test_labels = idx.read_idx_split(FASHION, 'test')
  rng = np.random.default_rng(1)
  take = rng.permutation(len(train_labels))[:700]
  true = train_labels[take].astype(np.int64)
  noisy = np.where(rng.random(700) < 0.4, rng.integers(0, 10, 700), true)
  data = famus_jax.arrays_data(train_images[take[:600]], noisy[:600], num_classes=10,
                               meta_images=train_images[take[600:]],
                               meta_labels=true[600:], test_images=test_images[:500],
                               test_labels=test_labels[:500], true_labels=true[:600])
  model = famus_jax.Classifier(UserBackbone(), num_classes=10)
  fields = dict(batch_size=50, meta_batch_size=50, eval_batch_size=250, num_steps=12,
                eval_every=6, checkpoint_every=6, log_every=6)
  first = famus_jax.fit(model, data, str(tmp_path), method='mwnet', **fields)
  assert first['steps'] == 12 and first['method'] == 'mwnet'
  fields.update(num_steps=24, resume='allow_changes')
  second = famus_jax.fit(model, data, str(tmp_path), method='mwnet', **fields)
  assert second['steps'] == 24 and second['resumes'] == 1
  assert 'Resumed from the checkpoint at step 12' in capsys.readouterr().out
  assert second['last_test_accuracy'] > 0.2   # chance is 0.1: it learned something


def test_bad_inputs_name_what_is_wrong(data):
  with pytest.raises(ConfigError, match=r'config\.famus\.no_such is not a field'):
    famus_jax.config_for('famus', data, **{'famus.no_such': 1})
  with pytest.raises(ConfigError, match=r"config\.resume='yes' is not one of"):
    famus_jax.config_for('erm', data, resume='yes')
  with pytest.raises(ConfigError, match=r"config\.method='mwnett' is not one of"):
    famus_jax.fit(MODEL, data, '/nonexistent-never-created', method='mwnett')
  with pytest.raises(ValueError, match='train_images must be uint8'):
    famus_jax.arrays_data(np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, int), num_classes=2)
  with pytest.raises(ValueError, match=r'train_labels must lie in \[0, 2\)'):
    famus_jax.arrays_data(np.zeros((4, 8, 8, 3), np.uint8), np.full(4, 3), num_classes=2)
  with pytest.raises(ConfigError, match="model='custom'"):
    create_model(famus_jax.config_for('erm', data), C)
  assert famus_jax.__version__
