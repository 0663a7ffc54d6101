"""CIFAR presets end to end: through TFDS mock data and from an official-format archive.

The model is shrunk (the config's WRN-28-10 would take minutes per step on a
CPU); everything else is the CIFAR-10 config as a user runs it.
"""

import json

import pytest
import tensorflow_datasets as tfds

from famus_jax.presets import cifar10, cifar10_pseudo_clean, cifar100_pseudo_clean
from famus_jax.data.testing import write_fake_cifar_archive
from famus_jax.train.trainer import train_and_evaluate


def small_cifar10(**overrides):
  config = cifar10.get_config()
  config.model = 'small_cnn'
  config.width = 4
  config.num_meta = 50
  config.batch_size = 20
  config.meta_batch_size = 10
  config.eval_batch_size = 20
  config.num_steps = 3
  config.eval_every = 3
  config.checkpoint_every = 3
  config.log_every = 1
  config.progress_bar = False
  config.download = False
  config.mwnet.hidden = 8
  config.update(overrides)
  return config


def test_cifar10_config_under_tfds_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=120):
    summary = train_and_evaluate(small_cifar10(data_source='tfds'), str(tmp_path))
  assert summary['dataset'] == 'cifar10' and summary['method'] == 'mwnet'
  assert summary['num_train'] == 120 - 50 and summary['num_meta'] == 50
  assert summary['steps'] == 3
  info = json.loads((tmp_path / 'data_info.json').read_text())
  assert 'tfds' in info['source']


def test_cifar10_config_from_official_archive(tmp_path):
  path = write_fake_cifar_archive(str(tmp_path / 'data'), 'cifar10', per_batch=30)
  assert path.endswith('cifar-10-python.tar.gz')
  summary = train_and_evaluate(
      small_cifar10(data_source='cifar_archive', data_dir=str(tmp_path / 'data')),
      str(tmp_path / 'run'))
  assert summary['num_train'] == 150 - 50 and summary['num_meta'] == 50
  assert 0.0 <= summary['last_test_accuracy'] <= 1.0
  info = json.loads((tmp_path / 'run' / 'data_info.json').read_text())
  assert 'cifar-10-python.tar.gz' in info['source']


# The presets' own method (famus, semi-supervised) steps in tests/test_semi_supervised.py.
@pytest.mark.parametrize('preset,method', [('cifar10_pseudo_clean', 'dividemix'),
                                           ('cifar100_pseudo_clean', 'mwnet')])
def test_pseudo_clean_presets_under_tfds_mock_data(tmp_path, preset, method):
  """The co-training presets (supplement setting) past the warm-up, with a small CNN."""
  config = {'cifar10_pseudo_clean': cifar10_pseudo_clean,
            'cifar100_pseudo_clean': cifar100_pseudo_clean}[preset].get_config()
  assert (config.model, config.batch_size, config.lr.base, config.num_epochs,
          tuple(config.lr.boundaries_epochs)) == ('preact_resnet18', 64, 0.02, 300, (200, 250))
  assert config.meta_set == 'pseudo_clean' and config.num_meta == 0
  assert config.cotrain.semi_supervised and config.method == 'famus'
  config.update(model='small_cnn', width=4, batch_size=20, meta_batch_size=10,
                eval_batch_size=20, num_steps=8, eval_every=4, checkpoint_every=8, log_every=1,
                progress_bar=False, download=False, data_source='tfds', method=method)
  config.cotrain.warmup_epochs = 1
  config.cotrain.unlabelled_batch_size = 10
  config.mwnet.hidden = 8
  with tfds.testing.mock_data(num_examples=120):
    summary = train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 8 and summary['method'] == method   # 6 warm-up steps, then 2
  events = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert any(e['event'] == 'division' for e in events)
  semi_steps = [e for e in events if e['event'] == 'train' and 'semi_labelled_loss' in e]
  assert semi_steps and all(e['step'] > 6 for e in semi_steps)
