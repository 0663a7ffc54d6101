"""Fault injection: kills, damaged checkpoints, concurrent runs, changed configs, torn logs,
damaged data files and a full disk, each with the outcome the trainer promises.

One uninterrupted tiny run (module fixture) is the reference; each case works on a copy of
its workdir, so the file runs in about a minute on one core.
"""

import ctypes
import errno
import gzip
import io
import json
import os
import pathlib
import random
import re
import shutil
import sys
import tarfile

import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from famus_jax import catalogue
from famus_jax import config as schema
from famus_jax.data import cifar_archive, datasets, idx, sources, testing
from famus_jax.errors import (CheckpointDamagedError, CheckpointSaveError, ConfigError,
                              DataCorruptError, DataNotFoundError, NonFiniteLossError, WorkdirLockedError,
                              WorkdirMismatchError)
from famus_jax.presets import tiny
from famus_jax.tools import report
from famus_jax.tools.label_issues import restore_run
from famus_jax.train.checkpoint import (Checkpointer, WorkdirLock, config_fingerprint,
                                        fingerprint_differences)
from famus_jax.train import resume
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


def newest_record(workdir):
  """The per-example record (famus_jax/train/record.py) of the newest checkpoint in `workdir`."""
  return restore_run(str(workdir))[2].record


def assert_records_equal(a, b):
  for field in ('weight_sum', 'seen', 'last_pred'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


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
  assert (tmp_path / 'checkpoints' / '6').is_dir()
  assert not (tmp_path / 'checkpoints' / '12').is_dir()  # an interrupted save is never committed
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
  # The per-example record continues bit for bit: every draw of the 12 steps counted once.
  record = newest_record(tmp_path)
  assert int(record.seen.sum()) == 12 * tiny.get_config().batch_size
  assert_records_equal(record, newest_record(ref_dir))


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


def test_field_newer_than_the_record_counts_only_when_it_is_not_the_default():
  """A record written before the schema declared a field: its default is the old behaviour."""
  defaults = config_fingerprint(schema.get_config().to_dict())
  new = {'config': config_fingerprint(erm_config().to_dict()), 'data': {'source': 'x'}}
  old = {'config': {k: v for k, v in new['config'].items() if k != 'fsr.relabel_target'},
         'data': {'source': 'x'}}
  assert fingerprint_differences(old, new, defaults) == []
  assert fingerprint_differences(old, new) == [('fsr.relabel_target', '<absent>', 'prob_ema')]
  changed = {'config': {**new['config'], 'fsr.relabel_target': 'logit_ema'}, 'data': {'source': 'x'}}
  assert fingerprint_differences(old, changed, defaults) == [
      ('fsr.relabel_target', '<absent>', 'logit_ema')]


def recorded_config(method: str) -> dict:
  """The config fingerprint the trainer records for the schema's defaults and `method`."""
  c = schema.get_config()
  c.method = method
  return config_fingerprint(catalogue.with_update_period(c).to_dict())


def test_a_record_older_than_a_changed_default_resumes_only_with_what_it_ran():
  """meta.update_every was added at 1 and its default is now the method's own period (5 for
  MW-Net, 1 for MLC), which the trainer records: a record lacking the field ran every step, so
  MW-Net's default is a change, MLC's and an explicit 1 are not."""
  defaults = resume.record_defaults_fingerprint()
  assert defaults['meta.update_every'] == 1 != schema.get_config().meta.update_every
  for method, period, diffs in (('mwnet', 5, [('meta.update_every', '<absent>', 5)]),
                                ('mlc', 1, [])):
    new = {'config': recorded_config(method), 'data': {}}
    assert new['config']['meta.update_every'] == period
    old = {'config': {k: v for k, v in new['config'].items() if k != 'meta.update_every'},
           'data': {}}
    assert fingerprint_differences(old, new, defaults) == diffs
    every_step = {'config': {**new['config'], 'meta.update_every': 1}, 'data': {}}
    assert fingerprint_differences(old, every_step, defaults) == []


def test_a_record_of_the_unset_period_reads_as_the_methods_own():
  """A record that stored the unset period (None) ran with its method's own, so the same run
  resumes as it is and another period is a change."""
  new = {'config': recorded_config('mwnet'), 'data': {}}
  saved = {'config': {**new['config'], 'meta.update_every': None}, 'data': {}}
  assert resume.with_named_period(saved)['config']['meta.update_every'] == 5
  assert fingerprint_differences(resume.with_named_period(saved), new) == []
  every_step = {'config': {**new['config'], 'meta.update_every': 1}, 'data': {}}
  assert fingerprint_differences(resume.with_named_period(saved), every_step) == [
      ('meta.update_every', 5, 1)]
  assert resume.with_named_period(new) is new
  # L2R (no meta model) given a period trained at every step, which the trainer now records.
  l2r = {'config': recorded_config('l2r'), 'data': {}}
  assert l2r['config']['meta.update_every'] == 1
  given = {'config': {**l2r['config'], 'meta.update_every': 5}, 'data': {}}
  assert fingerprint_differences(given, l2r) == [('meta.update_every', 5, 1)]
  assert fingerprint_differences(resume.with_named_period(given), l2r) == []


def test_a_record_without_the_actual_step_ran_the_papers_update():
  """meta.actual_step was added with the papers' update (recompute) as the only form: a record
  lacking it resumes under recompute and not under today's default (reuse), and the report
  names it as recompute."""
  defaults = resume.record_defaults_fingerprint()
  assert defaults['meta.actual_step'] == 'recompute' != schema.get_config().meta.actual_step
  new = {'config': recorded_config('mwnet'), 'data': {}}
  absent = {'config': {k: v for k, v in new['config'].items() if k != 'meta.actual_step'},
            'data': {}}
  assert fingerprint_differences(absent, new, defaults) == [
      ('meta.actual_step', '<absent>', 'reuse')]
  recompute = {'config': {**new['config'], 'meta.actual_step': 'recompute'}, 'data': {}}
  assert fingerprint_differences(absent, recompute, defaults) == []
  old = report.with_schema_defaults({'method': 'mwnet', 'meta': {'update_every': 1}})
  assert catalogue.label(old) == 'mwnet'


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


# ---- damaged TFDS copies ----------------------------------------------------------------------

def _png(image):
  """PNG bytes of a uint8 (H, W, C) image, as TFDS stores images (PIL: no TensorFlow needed)."""
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format='PNG')
  return buffer.getvalue()


def write_tfds_copy(data_dir, dataset, arrays):
  """Prepares a real TFDS copy of `dataset` in array_record format; returns its version directory.

  `arrays` maps 'train' / 'test' to (uint8 images (N, H, W, C), integer labels (N,)). The builder
  is TFDS's registered one (same name, version and features) with only its example generation
  replaced, so nothing is downloaded and TensorFlow is not needed; TFDS itself serializes,
  shuffles and writes the shards and dataset_info.json / features.json in
  <data_dir>/<name>/<version>.
  """
  registered = tfds.builder_cls(datasets.DATASET_SPECS[dataset].tfds_name)

  class LocalCopy(registered, skip_registration=True):
    name = registered.name

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._examples(*arrays[split]) for split in arrays}

    def _examples(self, images, labels):
      for i, (image, label) in enumerate(zip(images, labels)):
        example = {'image': _png(image), 'label': int(label)}
        if 'id' in self.info.features:
          example['id'] = f'{i:05d}'
        yield i, example

  builder = LocalCopy(data_dir=str(data_dir), file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return pathlib.Path(builder.data_dir)


def _tiny_arrays(seed, shape, train=12, test=6):
  rng = np.random.default_rng(seed)
  return {split: (rng.integers(0, 256, (n,) + shape, dtype=np.uint8), rng.integers(0, 10, n))
          for split, n in (('train', train), ('test', test))}


def _examples(images, labels):
  """The (image bytes, label) pairs of a split, sorted: TFDS stores examples shuffled."""
  return sorted(zip((image.tobytes() for image in images), np.asarray(labels).tolist()))


def _shard(version_dir, split):
  (path,) = version_dir.glob(f'*-{split}.array_record-*')
  return path


@pytest.fixture(scope='module')
def tfds_copy(tmp_path_factory):
  """A real prepared TFDS fashion_mnist in array_record format: 12 train, 6 test 28x28x1 images."""
  arrays = _tiny_arrays(3, (28, 28, 1))
  root = tmp_path_factory.mktemp('tfds')
  return root, write_tfds_copy(root, 'fashion_mnist', arrays), arrays


@pytest.mark.parametrize('source', ['tfds', 'auto'])
def test_prepared_tfds_copy_loads_the_images_and_labels_written(tfds_copy, source):
  root, _, arrays = tfds_copy
  raw = sources.load_source('fashion_mnist', source, str(root), None)
  assert raw.description == f'tfds:fashion_mnist ({root})'
  for split, images, labels in (('train', raw.train_images, raw.train_labels),
                                ('test', raw.test_images, raw.test_labels)):
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    assert images.shape == arrays[split][0].shape
    assert _examples(images, labels) == _examples(*arrays[split])


def damage_tfds(version_dir, kind):
  """Damages one file of a TFDS copy as `kind` says; returns its path."""
  if kind.endswith('dataset_info'):
    path = version_dir / 'dataset_info.json'
  elif kind.endswith('features'):
    path = version_dir / 'features.json'
  else:
    path = _shard(version_dir, 'test' if kind == 'delete_test_shard' else 'train')
  data = path.read_bytes()
  if kind.startswith('delete'):
    path.unlink()
  elif kind == 'truncate_shard':  # to its first 64 KiB block: no record is left
    path.write_bytes(data[:len(data) // 2])
  elif kind == 'cut_shard_tail':
    path.write_bytes(data[:-1000])
  elif kind == 'corrupt_shard_records':
    path.write_bytes(data[:4096] + os.urandom(64) + data[4096 + 64:])
  elif kind.startswith('garbage'):
    path.write_bytes(os.urandom(len(data)))
  else:
    raise ValueError(kind)
  return path


TFDS_DAMAGE = [
    ('truncate_shard', DataCorruptError, 'truncated'),
    ('cut_shard_tail', DataCorruptError, 'truncated'),
    ('garbage_shard', DataCorruptError, 'not an array_record file'),
    ('corrupt_shard_records', DataCorruptError, r'record \d+ is damaged'),
    ('delete_shard', DataNotFoundError, 'is missing'),
    ('delete_test_shard', DataNotFoundError, 'is missing'),
    ('delete_dataset_info', DataNotFoundError, 'is missing'),
    ('garbage_dataset_info', DataCorruptError, 'not a JSON file'),
    ('delete_features', DataNotFoundError, 'is missing'),
    ('garbage_features', DataCorruptError, 'not a JSON file'),
]


@pytest.mark.parametrize('source', ['tfds', 'auto'])
@pytest.mark.parametrize('kind, error, pattern', TFDS_DAMAGE)
def test_damaged_tfds_copy_names_the_file_and_the_cause(tfds_copy, tmp_path, kind, error,
                                                        pattern, source):
  root = copy_run(tfds_copy[0], tmp_path / 'tfds')
  path = damage_tfds(root / tfds_copy[1].relative_to(tfds_copy[0]), kind)
  with pytest.raises(DataNotFoundError) as err:
    sources.load_source('fashion_mnist', source, str(root), None)
  assert type(err.value) is error  # DataCorruptError: there but unreadable; else missing
  message = str(err.value)
  assert str(path) in message and re.search(pattern, message), message
  assert 'no other copy of the data is used instead' in message
  assert datasets.DEBIAN_FASHION_MNIST_DIR not in message


def test_damaged_tfds_copy_is_not_replaced_by_a_download(tmp_path):
  data_dir = tmp_path / 'data'
  version_dir = write_tfds_copy(data_dir, 'cifar10', _tiny_arrays(4, (32, 32, 3)))
  archive = testing.write_fake_cifar_archive(str(tmp_path / 'mirror'), 'cifar10', per_batch=20)

  def load():
    return sources.load_source('cifar10', 'auto', str(data_dir), None, download=True,
                               url=f'file://{archive}')

  assert load().description == f'tfds:cifar10 ({data_dir})'
  shard = damage_tfds(version_dir, 'cut_shard_tail')
  with pytest.raises(DataCorruptError) as err:
    load()
  assert str(shard) in str(err.value) and 'truncated' in str(err.value)
  assert not list(data_dir.glob('cifar-10-*'))  # the archive was never fetched


# ---- a real full disk -------------------------------------------------------------------------

# A tmpfs of this size holds the run's records (6 files, 24 KiB in 4 KiB pages) and its first
# checkpoint (88-104 KiB) but not a second one beside it, so the save of step 12 fails. Measured:
# 144k already fails at step 6, 152k-232k fail at step 12, 236k holds the whole run.
SMALL_DISK = '192k'
MNT_DETACH = 2  # <sys/mount.h>: umount2 even while a file in it is still open


def _mount_tmpfs(target, size):
  """Mounts a tmpfs of `size` on `target` (mount(2)); returns libc for the umount2 call."""
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.mount(b'tmpfs', os.fsencode(target), b'tmpfs', 0, f'size={size}'.encode()) != 0:
    code = ctypes.get_errno()
    if code == errno.EPERM:
      pytest.skip('mounting a tmpfs is not permitted here (not root); the simulated '
                  'test_disk_full_during_a_save_names_the_path_and_the_last_good_checkpoint '
                  'covers a full disk')
    raise OSError(code, f'mount -t tmpfs -o size={size}: {os.strerror(code)}', str(target))
  return libc


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='tmpfs mounts need Linux; the '
                    'simulated full-disk test covers it')
def test_real_full_disk_names_the_path_and_the_last_good_checkpoint_then_resumes(
    reference, tmp_path, capsys):
  ref_dir, ref = reference
  disk = tmp_path / 'small_disk'
  disk.mkdir()
  libc = _mount_tmpfs(disk, SMALL_DISK)
  work = disk / 'run'
  try:
    with pytest.raises(CheckpointSaveError) as err:
      train_and_evaluate(erm_config(), str(work))
    rerun = copy_run(work, tmp_path / 'run')  # moved to a disk with room, as a user would
  finally:
    if libc.umount2(os.fsencode(disk), MNT_DETACH) != 0:
      raise OSError(ctypes.get_errno(), 'umount2 failed', str(disk))
  message = str(err.value)
  assert '\n' not in message
  assert f'{work}/checkpoints/12:' in message
  assert 'No space left on device [errno ENOSPC]' in message
  assert f'the last good checkpoint is step 6 ({work}/checkpoints/6)' in message
  capsys.readouterr()
  summary = train_and_evaluate(erm_config(), str(rerun))
  assert 'Resumed from the checkpoint at step 6' in capsys.readouterr().out
  for key in SAME:
    assert summary[key] == ref[key], key
  assert summary['resumes'] == 1
  assert events_without_time(rerun) == events_without_time(ref_dir)
