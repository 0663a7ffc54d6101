"""Checkpoints: Orbax `CheckpointManager` in <workdir>/checkpoints, checked on restore.

Each checkpoint holds the whole `TrainState` (params, batch stats, optimiser
state, method state, root rng, step) and a JSON record of the host-side
progress (best accuracy so far, timing and weight statistics, epoch position).
Orbax writes a step into a temporary directory and renames it when complete,
so a crash during a save leaves the previous checkpoint as the latest one.

The record also carries what makes a checkpoint trustworthy on restore:

- `fingerprint`: the run's identity (`run_fingerprint`: the config minus
  `RESUMABLE_FIELDS`, plus the data's identity). The trainer compares it with
  the new config's before it restores or writes anything.
- `layout`: path, shape and dtype of every state leaf, so a state of another
  structure (another method or model) is refused with a message, not an Orbax
  tree error.
- `checksum`: sha256 of the host copies of the state leaves at save time. A
  restored state whose checksum differs, or whose params / batch stats /
  optimiser state hold NaN or inf, is damaged: `restore_newest_intact` then
  falls back to the next older checkpoint.

A state that is not finite is never saved. `WorkdirLock` keeps one writer per
workdir.
"""

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from typing import Callable, Optional

from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from famus_jax.errors import (CheckpointDamagedError, CheckpointSaveError, WorkdirMismatchError,
                              WorkdirLockedError, first_line)
from famus_jax.train import distributed
from famus_jax.train.state import TrainState

# Config fields that may change when a run resumes: they change what is written or observed,
# not what is trained, so they are left out of the run fingerprint.
RESUMABLE_FIELDS = (
    # Cadence of logs, evaluations and checkpoints, and the progress bar.
    'log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints', 'progress_bar',
    'weights_log_every', 'eval_train_fit',
    # TensorBoard event files beside metrics.jsonl: a copy of what the log records.
    'tensorboard',
    # Batches built ahead on a thread (train/prefetch.py): the same batches either way.
    'prefetch_batches',
    # Evaluation batching: the test set's sums are the same for any batch size.
    'eval_batch_size',
    # Where the data is read from; what was read is compared through the data's identity.
    'data_dir', 'download', 'cifar_url', 'noisy_label_file',
    # How image files are read (data/image_folder.py): the same pixels either way.
    'image_folder.decode_threads', 'image_folder.check_files',
    # Tools that observe training without changing it (exact-vs-estimate meta-gradient
    # checks, the quality tool's schedule).
    'diagnostics_every', 'quality.every', 'quality.random_draws',
    # The override itself.
    'resume',
    # How the processes of a job find each other: the same global batches are trained with
    # any number of processes, so a job may resume on another count of hosts.
    'distributed.num_processes', 'distributed.process_id', 'distributed.coordinator_address',
    'distributed.local_device_ids', 'distributed.initialization_timeout_s',
    'distributed.heartbeat_timeout_s',
)

# Values of config.resume (see famus_jax/config.py).
RESUME_MODES = ('auto', 'allow_changes')

# TrainState fields that must be finite in a checkpoint.
FINITE_FIELDS = ('params', 'batch_stats', 'opt_state')
_TRAIN_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainState))


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f'{a.shape}{a.dtype}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def data_identity(data) -> dict:
  """What identifies the data a run trains on: source kind, sizes and content hashes.

  The hashes cover the noisy training labels, the meta split (images and labels) and a
  strided sample of the training images; the source's path is not part of it, so moving a
  data directory keeps the identity.
  """
  info = data.info
  source = str(info.get('source', ''))
  kind = source.split(':', 1)[0].split('(', 1)[0]
  step = max(1, len(data.train_images) // 512)
  return {
      'dataset': info.get('dataset'), 'source': kind,
      'num_train': int(data.num_train), 'num_meta': int(len(data.meta_labels)),
      'num_test': int(len(data.test_labels)), 'num_classes': int(data.num_classes),
      'train_labels_sha256': _digest(data.train_labels),
      'meta_split_sha256': _digest(data.meta_labels, data.meta_images),
      'train_images_sample_sha256': _digest(data.train_images[::step]),
  }


def config_fingerprint(values: dict) -> dict:
  """The flattened config (dotted names) minus RESUMABLE_FIELDS, values as JSON reads them back
  (tuples as lists)."""
  flat = traverse_util.flatten_dict(values, sep='.')
  return {k: json.loads(json.dumps(v)) for k, v in flat.items() if k not in RESUMABLE_FIELDS}


def run_fingerprint(config, data) -> dict:
  """{'config': config_fingerprint(config), 'data': data_identity(data)}."""
  return {'config': config_fingerprint(config.to_dict()), 'data': data_identity(data)}


def fingerprint_differences(old: dict, new: dict, defaults: Optional[dict] = None) -> list:
  """[(field, old value, new value)] of every field that differs; data fields get 'data.'.

  defaults: the fingerprint of what a record lacking a field ran with (the
  schema's defaults, `config.record_defaults`). A config field absent from `old`
  (a record written before the schema declared it) is no difference when its
  new value is that value: a new field's default keeps the behaviour of the
  code that wrote the record, and a field whose default changed since
  (`config.BEFORE_THE_FIELD`) differs under the new default.
  """
  rows = []
  for part, prefix in (('config', ''), ('data', 'data.')):
    if part not in old or part not in new:
      continue  # e.g. a record read from config.json has no data identity
    a, b = old[part], new[part]
    for key in sorted(set(a) | set(b)):
      if key in RESUMABLE_FIELDS:
        continue
      missing = '<absent>'
      if (part == 'config' and defaults is not None and key not in a and key in defaults
          and b.get(key, missing) == defaults[key]):
        continue
      if a.get(key, missing) != b.get(key, missing):
        rows.append((prefix + key, a.get(key, missing), b.get(key, missing)))
  return rows


def _host_leaves(state):
  leaves = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if jax.dtypes.issubdtype(getattr(leaf, 'dtype', np.float32), jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    leaves.append((jax.tree_util.keystr(path), np.asarray(jax.device_get(leaf))))
  return leaves


def state_layout(state) -> list:
  """[[path, shape, dtype]] of every leaf of a state (device arrays are not copied)."""
  return [[jax.tree_util.keystr(path), list(np.shape(leaf)), str(leaf.dtype)]
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]]


def state_checksum(leaves) -> str:
  h = hashlib.sha256()
  for path, a in leaves:
    h.update(path.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _state_field(path: str) -> str:
  """The TrainState field a leaf path lies in ('.params[...]' or, in a co-trained pair's
  state, '.a.params[...]'): the first attribute name that is a TrainState field, else ''."""
  attrs = re.findall(r'\.(\w+)', path.split('[', 1)[0])
  return next((a for a in attrs if a in _TRAIN_STATE_FIELDS), '')


def non_finite_leaves(leaves) -> list:
  """Paths of params / batch_stats / opt_state leaves holding NaN or inf."""
  bad = []
  for path, a in leaves:
    top = _state_field(path)
    if top in FINITE_FIELDS and np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
      bad.append(path)
  return bad


# TensorStore (Orbax's array writer) reports an OS error as a ValueError whose message names the
# file ('Failed writing: "PATH"') and ends in [os_error_code='N'].
_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='?(\d+)'?\]")
_TENSORSTORE_FILE = re.compile(r'Failed writing: "([^"]+)"')


def _os_error_text(code: int, filename) -> str:
  where = f' ({filename})' if filename else ''
  return f'{os.strerror(code)} [errno {errno.errorcode.get(code, code)}]{where}'


def _os_cause(e: BaseException) -> str:
  """The first OS error of an exception chain (e.g. ENOSPC inside Orbax or TensorStore), else e."""
  seen, cur = set(), e
  while cur is not None and id(cur) not in seen:
    seen.add(id(cur))
    if isinstance(cur, OSError) and cur.errno:
      return _os_error_text(cur.errno, cur.filename)
    code = _TENSORSTORE_OS_ERROR.search(str(cur))
    if code:
      files = _TENSORSTORE_FILE.findall(str(cur))
      return _os_error_text(int(code.group(1)), files[-1] if files else None)
    cur = cur.__cause__ or cur.__context__
  return first_line(e)


class Checkpointer:
  """Save / restore-newest-intact for one workdir."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'progress'))
    self.last_good_step = None  # the newest checkpoint known to be intact

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def step_path(self, step) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state, progress: dict) -> None:
    """Saves `state` and the record `progress` (plus its checksum and layout) as `step`.

    Raises CheckpointDamagedError for a non-finite state (never saved) and CheckpointSaveError,
    one line naming the path and the last good checkpoint, when writing fails.
    """
    leaves = _host_leaves(state)
    bad = non_finite_leaves(leaves)
    if bad:
      raise CheckpointDamagedError(
          f'refusing to save the state of step {step}: NaN/inf in {", ".join(bad[:3])}'
          f'{" ..." if len(bad) > 3 else ""}; {self._last_good_text()}')
    record = {**progress, 'checksum': state_checksum(leaves), 'layout': state_layout(state)}
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(record)))
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if distributed.is_peer_failure(e):
        raise  # another process of the job died during the save (the trainer says so)
      raise CheckpointSaveError(
          f'could not write the checkpoint of step {step} to {self.step_path(step)}: '
          f'{_os_cause(e)}; {self._last_good_text()}') from None
    self.last_good_step = step

  def _last_good_text(self) -> str:
    if self.last_good_step is None:
      return 'there is no good checkpoint of this run yet'
    return (f'the last good checkpoint is step {self.last_good_step} '
            f'({self.step_path(self.last_good_step)}); a rerun resumes from it')

  def read_record(self, step: int) -> dict:
    """The JSON record of `step` (no arrays are read)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore()))
    record = restored['progress']
    if not isinstance(record, dict):
      raise ValueError(f'the progress record is a {type(record).__name__}, not a dict')
    return record

  def restore(self, template_state, step: Optional[int] = None):
    """(state, progress) of `step` (default: latest), shaped like the template; unchecked."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
    return restored['state'], restored['progress']

  def _restore_checked(self, step, template_state, record):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    state = restored['state']
    leaves = _host_leaves(state)
    if 'checksum' in record and state_checksum(leaves) != record['checksum']:
      raise ValueError('the arrays differ from the checksum written at save time')
    bad = non_finite_leaves(leaves)
    if bad:
      raise ValueError(f'NaN/inf in {", ".join(bad[:3])}')
    return state

  def restore_newest_intact(self, template_state, check_record: Callable[[int, dict], None]):
    """The newest checkpoint whose record is readable and whose arrays verify.

    `check_record(step, record)` runs on each readable record before its arrays are read
    (the trainer's fingerprint check; it raises to stop). Returns None when there is no
    checkpoint, else (step, state, record, damaged) with damaged = [(step, cause)] of the newer
    checkpoints that failed. Raises CheckpointDamagedError when every checkpoint is damaged.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    template_layout = state_layout(template_state)
    damaged = []
    for step in steps:
      try:
        record = self.read_record(step)
      except Exception as e:  # pylint: disable=broad-except
        damaged.append((step, f'its progress record is unreadable ({first_line(e)})'))
        continue
      check_record(step, record)
      if 'layout' in record and record['layout'] != template_layout:
        raise _layout_error(step, record['layout'], template_layout, self.step_path(step))
      try:
        state = self._restore_checked(step, template_state, record)
      except Exception as e:  # pylint: disable=broad-except
        damaged.append((step, f'its arrays are damaged ({first_line(e)})'))
        continue
      self.last_good_step = step
      return step, state, record, damaged
    listing = '; '.join(f'step {s} ({self.step_path(s)}): {cause}' for s, cause in damaged)
    raise CheckpointDamagedError(
        f'every checkpoint in {self.directory} is damaged, so this run cannot resume: '
        f'{listing}. Nothing was written. To start over, move {self.directory} away '
        f'(or use a new workdir); training is never restarted from scratch silently.')

  def quarantine(self, steps) -> list:
    """Moves damaged checkpoints to <workdir>/checkpoints_damaged/ so they are never reused.

    In a multi-process job process 0 moves them (and returns the new paths) while the
    others wait, then every process re-reads the directory.
    """
    moved = []
    target_dir = os.path.join(self.workdir, 'checkpoints_damaged')
    for step in steps if distributed.is_primary() else ():
      src = self.step_path(step)
      if not os.path.exists(src):
        continue
      os.makedirs(target_dir, exist_ok=True)
      dst, n = os.path.join(target_dir, str(step)), 1
      while os.path.exists(dst):
        dst, n = os.path.join(target_dir, f'{step}.{n}'), n + 1
      shutil.move(src, dst)
      moved.append(dst)
    distributed.barrier('famus_jax_quarantine')
    if steps:
      self.manager.reload()
    return moved

  def close(self) -> None:
    self.manager.close()


def _layout_error(step, saved, template, path):
  saved_d = {p: (s, d) for p, s, d in saved}
  new_d = {p: (s, d) for p, s, d in template}
  diffs = [p for p in sorted(set(saved_d) | set(new_d)) if saved_d.get(p) != new_d.get(p)]
  examples = ', '.join(f'{p}: {saved_d.get(p, "absent")} -> {new_d.get(p, "absent")}'
                       for p in diffs[:3])
  return WorkdirMismatchError(
      f'the checkpoint at step {step} ({path}) holds a training state of another structure '
      f'({len(diffs)} arrays differ, e.g. {examples}): a change of method or model cannot be '
      f'resumed, not even with --config.resume=allow_changes. Use a new workdir.')


class WorkdirLock:
  """An exclusive `fcntl.flock` on <workdir>/.lock holding the owner's pid.

  The kernel drops the lock when the process exits, also after SIGKILL, so a stale lock file
  never blocks a rerun.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), '.lock')
    self._file = None

  def acquire(self) -> None:
    f = open(self.path, 'a+')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or 'unknown'
      f.close()
      raise WorkdirLockedError(
          f'{os.path.dirname(self.path)} is in use by another famus_jax run (pid {holder}, '
          f'lock {self.path}); wait for it to finish, stop it, or use another workdir') from None
    f.seek(0)
    f.truncate()
    f.write(f'{os.getpid()}\n')
    f.flush()
    self._file = f

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
