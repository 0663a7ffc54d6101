"""configs/cifar10.py end to end: through TFDS mock data and from an official-format archive.

The model is shrunk (the config's WRN-28-10 would take minutes per step on a
CPU); everything else is the CIFAR-10 config as a user runs it.
"""

import json

import pytest
import tensorflow_datasets as tfds

from famus_jax.presets import cifar10
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
