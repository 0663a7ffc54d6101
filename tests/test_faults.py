"""Fault injection: kills, damaged checkpoints, concurrent runs, changed configs, torn logs,
damaged data files and a full disk, each with the outcome the trainer promises.

One uninterrupted tiny run (module fixture) is the reference; each case works on a copy of
its workdir, so the file runs in about a minute on one core.
"""

import errno
import gzip
import json
import os
import random
import shutil
import tarfile

import numpy as np
import orbax.checkpoint as ocp
import pytest

from famus_jax.data import cifar_archive, datasets, idx, sources, testing
from famus_jax.errors import (CheckpointDamagedError, CheckpointSaveError, ConfigError,
                              DataCorruptError, DataNotFoundError, NonFiniteLossError, WorkdirLockedError,
                              WorkdirMismatchError)
from famus_jax.presets import tiny
from famus_jax.train.checkpoint import Checkpointer, WorkdirLock
from famus_jax.train.logbook import read_metrics
from famus_jax.train.trainer import train_and_evaluate
from tests.test_trainer import last_json, run_child

RECORDS = ('config.json', 'data_info.json', 'metrics.jsonl', 'summary.json', 'fingerprint.json')
SAME = ('best_test_accuracy', 'last_test_accuracy', 'last_test_loss', 'steps',
        'mean_weight_clean', 'mean_weight_noisy')
OVERRIDES = {'method': 'erm', 'weights_log_every': 3}


def erm_config(**fields):
  config = tiny.get_config()
  config.update_from_flattened_dict({**OVERRIDES, **fields})
  return config


def snapshot(workdir):
  return {name: (workdir / name).read_bytes() for name in RECORDS if (workdir / name).exists()}


def copy_run(src, dst):
  shutil.copytree(src, dst)
  return dst


def events_without_time(workdir):
  return [(e['event'], e['step'], e.get('train_loss'), e.get('test_loss'), e.get('weights'))
          for e in read_metrics(str(workdir))]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """A finished tiny ERM run: checkpoints at steps 6 and 12, summary.json."""
  workdir = tmp_path_factory.mktemp('reference')
  summary = train_and_evaluate(erm_config(), str(workdir))
  return workdir, summary


# ---- kills ------------------------------------------------------------------------------------

@pytest.mark.parametrize('kill', ['after_random_step', 'in_save'])
def test_sigkill_then_resume_gives_the_uninterrupted_run(reference, tmp_path, kill):
  ref_dir, ref = reference
  if kill == 'in_save':
    flags = ('--kill-in-save', '12')
  else:
    flags = ('--kill-after-step', str(random.Random().randint(7, 11)))
  killed = run_child(tmp_path, OVERRIDES, *flags, check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  wall_first = Checkpointer(str(tmp_path), 2).read_record(6)['progress']['wall_seconds']
  resumed = run_child(tmp_path, OVERRIDES)  # the lock of the killed process is gone
  assert 'Resumed from the checkpoint at step 6' in resumed.stdout
  summary = last_json(resumed.stdout)
  for key in SAME:
    assert summary[key] == ref[key], key
  assert summary['resumes'] == 1
  assert summary['wall_time_s'] > wall_first > 0  # both processes' time
  # No duplicated events (weights at step 6 were logged before the kill and redone after).
  assert events_without_time(tmp_path) == events_without_time(ref_dir)


# ---- checkpoint damage ------------------------------------------------------------------------

def _array_files(step_dir):
  return sorted((p for p in (step_dir / 'state').rglob('*') if p.is_file()
                 and p.parent.name == 'd'), key=lambda p: -p.stat().st_size)


def damage(step_dir, kind):
  """Damages every array data file of the step (Orbax may leave data files it never reads)."""
  files = _array_files(step_dir)
  assert files
  if kind == 'delete_array_file':
    for path in files:
      path.unlink()
  elif kind == 'truncate_array_file':
    for path in files:
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  elif kind == 'flip_bytes':
    for path in files:
      data = bytearray(path.read_bytes())
      for i in random.Random(0).sample(range(len(data)), min(100, len(data))):
        data[i] ^= 0xFF
      path.write_bytes(bytes(data))
  elif kind == 'delete_metadata':
    (step_dir / 'state' / '_METADATA').unlink()
  elif kind == 'delete_progress_metadata':
    (step_dir / 'progress' / 'metadata').unlink()
  elif kind == 'delete_state':
    shutil.rmtree(step_dir / 'state')
  else:
    raise ValueError(kind)


KINDS = ['delete_array_file', 'truncate_array_file', 'flip_bytes', 'delete_metadata',
         'delete_progress_metadata', 'delete_state']


@pytest.mark.parametrize('kind', KINDS)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, kind,
                                                                  capsys):
  ref_dir, ref = reference
  work = copy_run(ref_dir, tmp_path / 'run')
  damage(work / 'checkpoints' / '12', kind)
  summary = train_and_evaluate(erm_config(), str(work))
  err = capsys.readouterr().err
  assert err.count('damaged checkpoint skipped') == 1
  assert f'step 12 ({work}/checkpoints/12)' in err and 'resuming from step 6' in err
  assert (work / 'checkpoints_damaged' / '12').is_dir()  # kept for inspection, never reused
  for key in SAME:
    assert summary[key] == ref[key], key
  # The re-trained step 12 is intact again.
  assert Checkpointer(str(work), 2).restore_newest_intact(
      _template(work), lambda s, r: None)[0] == 12


def _template(work):
  from famus_jax.data import build_data  # pylint: disable=import-outside-toplevel
  from famus_jax.train.trainer import Run, data_mesh  # pylint: disable=import-outside-toplevel
  config = erm_config()
  return Run(config, build_data(config), data_mesh()).init_state()


def test_every_checkpoint_damaged_stops_and_writes_nothing(reference, tmp_path):
  work = copy_run(reference[0], tmp_path / 'run')
  damage(work / 'checkpoints' / '12', 'delete_state')
  damage(work / 'checkpoints' / '6', 'flip_bytes')
  before = snapshot(work)
  with pytest.raises(CheckpointDamagedError) as err:
    train_and_evaluate(erm_config(), str(work))
  message = str(err.value)
  assert 'every checkpoint' in message and 'checkpoints/12' in message
  assert 'checkpoints/6' in message and 'never restarted from scratch' in message
  assert snapshot(work) == before


# ---- one writer per workdir -------------------------------------------------------------------

def test_second_process_on_a_workdir_gets_the_lock_error(tmp_path):
  tmp_path.mkdir(exist_ok=True)
  with WorkdirLock(str(tmp_path)):
    other = run_child(tmp_path, OVERRIDES, check=False)
    assert other.returncode != 0
    assert 'WorkdirLockedError' in other.stderr and f'pid {os.getpid()}' in other.stderr
    with pytest.raises(WorkdirLockedError, match=f'pid {os.getpid()}'):
      train_and_evaluate(erm_config(), str(tmp_path))  # a second open file, same process
  assert not (tmp_path / 'metrics.jsonl').exists()
  with WorkdirLock(str(tmp_path)):  # released on exit
    pass


# ---- changed config ---------------------------------------------------------------------------

def test_changed_config_stops_listing_the_fields_and_writes_nothing(reference, tmp_path):
  work = copy_run(reference[0], tmp_path / 'run')
  (work / 'summary.json').unlink()
  shutil.rmtree(work / 'checkpoints' / '12')  # as if killed after step 6
  before = snapshot(work)
  with pytest.raises(WorkdirMismatchError) as err:
    train_and_evaluate(erm_config(noise_rate=0.6, log_every=2), str(work))
  message = str(err.value)
  assert 'noise_rate: 0.4 -> 0.6' in message
  assert 'data.train_labels_sha256' in message  # the data's identity changed too
  assert 'log_every' not in message  # a field that may change on resume
  assert 'new workdir' in message and '--config.resume=allow_changes' in message
  assert snapshot(work) == before


def test_changed_method_is_refused_even_with_allow_changes(reference, tmp_path):
  work = copy_run(reference[0], tmp_path / 'run')
  before = snapshot(work)
  with pytest.raises(WorkdirMismatchError, match='method: "erm" -> "mwnet"'):
    train_and_evaluate(erm_config(method='mwnet'), str(work))
  with pytest.raises(WorkdirMismatchError, match='another structure'):
    train_and_evaluate(erm_config(method='mwnet', resume='allow_changes'), str(work))
  assert snapshot(work) == before


def test_allow_changes_continues_with_more_steps(reference, tmp_path):
  work = copy_run(reference[0], tmp_path / 'run')
  with pytest.raises(WorkdirMismatchError, match='num_steps: 12 -> 18'):
    train_and_evaluate(erm_config(num_steps=18), str(work))
  summary = train_and_evaluate(erm_config(num_steps=18, resume='allow_changes'), str(work))
  assert summary['steps'] == 18 and summary['resumes'] == 1
  resume = [e for e in read_metrics(str(work)) if e['event'] == 'resume']
  assert resume == [{'event': 'resume', 'step': 12, 'changes': [['num_steps', 12, 18]],
                     'damaged_checkpoints': []}]
  # The new settings are the run's record now; a plain rerun is a finished run.
  assert json.loads((work / 'config.json').read_text())['num_steps'] == 18
  assert train_and_evaluate(erm_config(num_steps=18), str(work))['steps'] == 18


def test_finished_run_rerun_keeps_its_summary(reference, tmp_path, capsys):
  work = copy_run(reference[0], tmp_path / 'run')
  before = snapshot(work)
  summary = train_and_evaluate(erm_config(log_every=3), str(work))
  assert 'already finished (12 of 12 steps)' in capsys.readouterr().out
  assert summary == reference[1]
  assert snapshot(work) == before


def test_rerun_after_nan_stop_with_another_lr_is_caught(tmp_path):
  config = erm_config(checkpoint_every=1)
  config.lr.base = 1e30
  with pytest.raises(NonFiniteLossError):
    train_and_evaluate(config, str(tmp_path))
  before = snapshot(tmp_path)
  with pytest.raises(WorkdirMismatchError, match=r'lr\.base: 1e\+30 -> 0\.1'):
    train_and_evaluate(erm_config(checkpoint_every=1), str(tmp_path))
  assert snapshot(tmp_path) == before


def test_no_checkpoint_yet_does_not_overwrite_another_runs_record(tmp_path):
  tmp_path.mkdir(exist_ok=True)
  (tmp_path / 'config.json').write_text(json.dumps(erm_config(seed=5).to_dict()))
  with pytest.raises(WorkdirMismatchError, match='seed: 5 -> 0'):
    train_and_evaluate(erm_config(), str(tmp_path))
  assert json.loads((tmp_path / 'config.json').read_text())['seed'] == 5


# ---- metrics.jsonl ----------------------------------------------------------------------------

def test_torn_last_log_line_is_dropped_and_the_run_resumes(reference, tmp_path, capsys):
  ref_dir, ref = reference
  work = copy_run(ref_dir, tmp_path / 'run')
  (work / 'summary.json').unlink()
  shutil.rmtree(work / 'checkpoints' / '12')
  with open(work / 'metrics.jsonl', 'a') as f:
    f.write('{"event": "train", "step": 13, "train_lo')
  summary = train_and_evaluate(erm_config(), str(work))
  assert 'torn last line' in capsys.readouterr().err
  for key in SAME:
    assert summary[key] == ref[key], key
  assert events_without_time(work) == events_without_time(ref_dir)


# ---- disk full / sizes ------------------------------------------------------------------------

def test_disk_full_during_a_save_names_the_path_and_the_last_good_checkpoint(tmp_path,
                                                                            monkeypatch):
  original = ocp.CheckpointManager.save

  def full_disk(self, step, *a, **k):
    if step == 12:
      raise OSError(errno.ENOSPC, 'No space left on device', f'{self.directory}/12')
    return original(self, step, *a, **k)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk)
  with pytest.raises(CheckpointSaveError) as err:
    train_and_evaluate(erm_config(), str(tmp_path))
  message = str(err.value)
  assert '\n' not in message
  assert f'{tmp_path}/checkpoints/12' in message and 'No space left on device' in message
  assert 'last good checkpoint is step 6' in message
  monkeypatch.setattr(ocp.CheckpointManager, 'save', original)
  assert train_and_evaluate(erm_config(), str(tmp_path))['steps'] == 12  # resumes from 6


@pytest.mark.parametrize('fields, pattern', [
    ({'batch_size': 4096}, r'config\.batch_size=4096 is larger than the training set'),
    ({'num_meta': 600}, 'num_meta=600'),
    ({'resume': 'yes'}, r"config\.resume='yes'"),
])
def test_size_checks_come_before_anything_is_written(tmp_path, fields, pattern):
  with pytest.raises(ConfigError, match=pattern):
    train_and_evaluate(erm_config(**fields), str(tmp_path / 'never'))
  assert not (tmp_path / 'never').exists()


# ---- damaged data files -----------------------------------------------------------------------

@pytest.fixture
def idx_dir(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (('train', 30), ('test', 10)):
    images_stem, labels_stem = idx.IDX_FILES[split]
    idx.write_idx(str(tmp_path / f'{images_stem}.gz'),
                  rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
    idx.write_idx(str(tmp_path / f'{labels_stem}.gz'),
                  rng.integers(0, 10, (n,), dtype=np.uint8))
  return tmp_path


@pytest.mark.parametrize('source', ['idx', 'auto'])
def test_truncated_idx_gz_names_the_file(idx_dir, source):
  path = idx_dir / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-200])
  with pytest.raises(DataCorruptError) as err:
    sources.load_source('fashion_mnist', source, str(idx_dir), None)
  assert str(path) in str(err.value) and 'truncated' in str(err.value)


def test_wrong_idx_size_names_the_file(idx_dir):
  path = idx_dir / 't10k-labels-idx1-ubyte.gz'
  idx.write_idx(str(path), np.zeros((9,), np.uint8))
  with pytest.raises(DataCorruptError, match='t10k-images.*10 images but .*t10k-labels.* 9'):
    sources.load_source('fashion_mnist', 'idx', str(idx_dir), None)


def test_explicit_data_dir_never_falls_back_to_another_copy(tmp_path):
  with pytest.raises(DataNotFoundError) as err:
    sources.load_source('fashion_mnist', 'auto', str(tmp_path), None)
  tried = str(err.value).split('How to provide')[0]
  assert f'idx at {tmp_path}' in tried
  assert datasets.DEBIAN_FASHION_MNIST_DIR not in tried  # only data_dir (and TFDS there)


@pytest.fixture
def cifar_path(tmp_path):
  return testing.write_fake_cifar_archive(str(tmp_path), 'cifar10', per_batch=20, seed=1)


@pytest.mark.parametrize('kind, pattern', [
    ('truncated', 'truncated'),
    ('garbage', 'not a CIFAR archive'),
    ('corrupt_middle', 'damaged'),
])
def test_damaged_cifar_archive_names_the_file_and_the_cause(cifar_path, kind, pattern):
  data = open(cifar_path, 'rb').read()
  if kind == 'truncated':
    data = data[:len(data) // 2]
  elif kind == 'garbage':
    data = os.urandom(4096)
  else:
    data = bytearray(data)
    middle = len(data) // 2
    data[middle:middle + 64] = os.urandom(64)
    data = bytes(data)
  with open(cifar_path, 'wb') as f:
    f.write(data)
  with pytest.raises(DataCorruptError) as err:
    sources.load_source('cifar10', 'cifar_archive', os.path.dirname(cifar_path), None)
  message = str(err.value)
  assert cifar_path in message and pattern in message
  assert 'lacks' not in message


def test_corrupt_tar_header_mid_archive_is_not_reported_as_missing_batches(tmp_path):
  path = testing.write_fake_cifar_archive(str(tmp_path), 'cifar10', per_batch=20, seed=1)
  raw = gzip.decompress(open(path, 'rb').read())
  with tarfile.open(path) as tar:
    offsets = [m.offset for m in tar.getmembers()]
  raw = bytearray(raw)
  raw[offsets[len(offsets) // 2]:offsets[len(offsets) // 2] + 100] = b'\x07' * 100
  with open(path, 'wb') as f:
    f.write(gzip.compress(bytes(raw)))
  with pytest.raises(ValueError, match='damaged tar member header') as err:
    cifar_archive.read_cifar(path, 'cifar10')
  assert path in str(err.value) and 'lacks' not in str(err.value)
  with pytest.raises(DataCorruptError, match='damaged tar member header'):
    sources.load_source('cifar10', 'cifar_archive', str(tmp_path), None)
