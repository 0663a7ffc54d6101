"""Bad input stops early with a message that names the field and what is allowed."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from famus_jax import config as base
from famus_jax.presets import tiny
from famus_jax import config_check
from famus_jax.errors import ConfigError, DataNotFoundError, NonFiniteLossError
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.trainer import Run, check_divisible, data_mesh, train_and_evaluate
from famus_jax.data import build_data


@pytest.mark.parametrize('field, value, allowed', [
    ('dataset', 'cifar11', 'cifar10'),
    ('model', 'resnet51', 'wide_resnet'),
    ('method', 'mwnett', 'famus'),
    ('noise_type', 'pairflip', 'asymmetric'),
    ('data_source', 'http', 'cifar_archive'),
])
def test_unknown_names_list_the_allowed_ones(field, value, allowed):
  config = tiny.get_config()
  config[field] = value
  with pytest.raises(ConfigError) as err:
    config_check.validate(config)
  assert f'config.{field}={value!r}' in str(err.value)
  assert allowed in str(err.value)


@pytest.mark.parametrize('rate', [1.0, -0.1, 1.5])
def test_noise_rate_outside_unit_interval(rate):
  config = tiny.get_config()
  config.noise_rate = rate
  with pytest.raises(ConfigError, match=r'config\.noise_rate=.*outside \[0\.0, 1\.0\)'):
    config_check.validate(config)


def test_meta_set_larger_than_a_class_can_give():
  config = tiny.get_config()
  config.num_meta = 600  # 60 per class; the synthetic classes have ~51 images
  with pytest.raises(ConfigError, match='num_meta'):
    build_data(config)


def test_batch_not_divisible_by_device_count():
  config = tiny.get_config()
  config.batch_size = 15
  with pytest.raises(ConfigError, match=r'config\.batch_size=15 is not divisible by the 2 devices'):
    check_divisible(config, 2)
  check_divisible(config, 1)  # fine on one device
  assert data_mesh().size == len(jax.devices())


def test_missing_data_files_say_what_was_tried(tmp_path):
  config = base.get_config()
  config.dataset = 'cifar10'
  config.data_source = 'cifar_archive'
  config.data_dir = str(tmp_path)
  config.download = False
  with pytest.raises(DataNotFoundError) as err:
    train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(err.value)
  assert str(tmp_path) in message and 'data_dir' in message and 'cifar-10-python.tar.gz' in message


def test_method_with_meta_set_needs_num_meta():
  config = tiny.get_config()
  config.num_meta = 0
  with pytest.raises(ConfigError, match='num_meta'):
    train_and_evaluate(config, '/nonexistent-never-created')


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_state(tmp_path):
  config = tiny.get_config()
  config.method = 'erm'
  config.lr.base = 1e30
  config.checkpoint_every = 1
  with pytest.raises(NonFiniteLossError, match=r'NaN/inf at step (\d+)') as err:
    train_and_evaluate(config, str(tmp_path))
  bad_step = int(err.value.args[0].split('at step ')[1].split()[0])
  assert bad_step >= 2
  checkpointer = Checkpointer(str(tmp_path), config.keep_checkpoints)
  assert checkpointer.latest_step() == bad_step - 1
  run = Run(config, build_data(config), data_mesh())
  state, _ = checkpointer.restore(run.init_state())
  assert int(state.step) == bad_step - 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  assert not os.path.exists(tmp_path / 'summary.json')


@pytest.mark.parametrize('field, value', [('famus.strategy', 'greedy'), ('famus.base', 'mentornet'),
                                          ('famus.exact_steps', -1), ('famus.meta_lr_scale', 0.0),
                                          ('famus.exact_meta_lr_scale', 0.0),
                                          ('fsr.weight_mode', 'tail')])
def test_method_groups_are_checked_before_loading_data(field, value):
  config = tiny.get_config()
  group, name = field.split('.')
  config[group][name] = value
  config.data_source = 'idx'  # would fail to load: the config check must come first
  with pytest.raises(ConfigError, match=name):
    config_check.validate(config)


def run_main(*flags):
  """(exit code, stderr) of `python main.py --config=tiny FLAGS...` in a fresh process."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, os.path.join(root, 'main.py'), '--config=tiny',
                         '--config.num_steps=1', *flags],
                        capture_output=True, text=True, timeout=300, check=False)
  return proc.returncode, proc.stderr


def test_unknown_override_is_one_line_naming_the_field():
  code, err = run_main('--config.no_such_field=1')
  assert code != 0 and 'Traceback' not in err
  assert err.strip() == ("error: --config.no_such_field: the config has no field "
                         "'no_such_field' (famus_jax/config.py lists them)")
  code, err = run_main('--config.fsr.mixup_alpa=0.5')
  assert code != 0 and 'Traceback' not in err
  assert err.strip().startswith("error: --config.fsr.mixup_alpa: the config has no field "
                                "'fsr.mixup_alpa'; did you mean fsr.mixup_alpha")


def test_none_on_the_command_line_for_the_fields_that_take_it(tmp_path):
  """--config.FIELD=None sets a nullable field (the tiny preset pins the period; None gives
  MW-Net's own, recorded as 5); any other field refuses it in one line naming those fields."""
  code, err = run_main('--config.meta.update_every=None', '--config.famus.exact_meta_lr_scale=None',
                       f'--workdir={tmp_path / "run"}')
  assert code == 0, err
  recorded = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert recorded['meta']['update_every'] == 5
  assert recorded['famus']['exact_meta_lr_scale'] is None
  code, err = run_main('--config.lr=None', f'--workdir={tmp_path / "never"}')
  assert code != 0 and 'Traceback' not in err
  assert err.strip() == ('error: --config.lr=None: only these fields take None: '
                         'meta.update_every, famus.exact_meta_lr_scale')
  assert not (tmp_path / 'never').exists()
  proc = subprocess.run([sys.executable, '-m', 'famus_jax.tools.report', str(tmp_path / 'run'),
                         f'--out={tmp_path / "report"}', '--config.meta.update_every=None'],
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode != 0 and proc.stderr.strip() == (
      'error: --config.meta.update_every=None: this command takes no --config')


@pytest.mark.parametrize('flag, says', [
    ('--config.resume=yes', "config.resume='yes' is not one of ['allow_changes', 'auto']"),
    ('--config.method=mwnett', "config.method='mwnett' is not one of ["),
    ('--config.famus.strategy=greedy', 'strategy'),
])
def test_bad_config_value_is_one_line_and_writes_nothing(tmp_path, flag, says):
  workdir = tmp_path / 'never'
  code, err = run_main(flag, f'--workdir={workdir}')
  assert code != 0 and 'Traceback' not in err, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error (ConfigError): config.'), err
  assert says in lines[0]
  assert not workdir.exists()


def test_workdir_that_is_a_file_is_one_line_naming_the_path(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('')
  for workdir, says in ((path, 'is a file'), (path / 'run', f'lies under {path}, which is a file')):
    code, err = run_main(f'--workdir={workdir}')
    assert code != 0 and 'Traceback' not in err, err
    assert err.strip().splitlines() == [
        f'error (ConfigError): --workdir={workdir} {says}, not a directory: give a directory path']
