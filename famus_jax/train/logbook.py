"""What a run writes for people: metrics.jsonl events and their aggregation.

metrics.jsonl holds one JSON object per line, each with 'event' ('train',
'eval', 'epoch', ...) and 'step' (the number of finished steps; for the events
in PRE_STEP_EVENTS, the number of finished steps when the step's batch was
drawn). On resume the events of steps the restored state has not done are
dropped so the file reads as one run. A torn last line (what a full disk or a
power loss leaves) is dropped with a warning.

With config.tensorboard=True the log also writes the scalars of its 'train' and 'eval' events to
TensorBoard event files in <workdir>/tensorboard/ (famus_jax/train/tensorboard.py).
"""

import gzip
import json
import os
import sys

import numpy as np

from famus_jax import catalogue
from famus_jax.train.tensorboard import TensorBoardWriter


def _jsonable(value):
  if isinstance(value, (np.floating, float)):
    return float(value)
  if isinstance(value, (np.integer, int, np.bool_, bool)):
    return value.item() if hasattr(value, 'item') else value
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


class MetricsLog:
  """Appends events to <workdir>/metrics.jsonl, and their scalars to TensorBoard when asked.

  active=False (every process of a multi-process job but process 0): writes and truncates
  nothing, so the file holds each event once; such a log writes no TensorBoard files either.
  tensorboard: whether to write TensorBoard event files as well; None takes config.tensorboard
  from the run's <workdir>/config.json (the trainer writes it before it opens the log), and
  False where there is none.
  """

  def __init__(self, workdir: str, active: bool = True, tensorboard=None):
    self.workdir = workdir
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.active = active
    if tensorboard is None:
      tensorboard = active and _config_field(workdir, 'tensorboard', False)
    self.tensorboard = bool(active and tensorboard)
    self._board = None

  def _open_board(self) -> None:
    if self._board is None:
      self._board = TensorBoardWriter(self.workdir)

  def truncate_after(self, step: int) -> None:
    """Keep only the events of the first `step` steps (used when resuming).

    That is events with event step <= `step`, except PRE_STEP_EVENTS, which need step < `step`
    (the step they describe is redone). Unreadable lines are dropped with a warning.
    """
    if not self.active:
      return
    if self.tensorboard:  # the steps after `step` are done again: hide their earlier points
      self._open_board()
      self._board.purge_from(step + 1)
    if not os.path.exists(self.path):
      return
    kept = []
    for record in read_jsonl(self.path):
      limit_ok = (record.get('step', 0) < step if record.get('event') in PRE_STEP_EVENTS
                  else record.get('step', 0) <= step)
      if limit_ok:
        kept.append(json.dumps(record) + '\n')
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, event: str, step: int, values: dict) -> None:
    if not self.active:
      return
    record = {'event': event, 'step': int(step)}
    record.update({k: _jsonable(v) for k, v in values.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self.tensorboard:
      self._open_board()
      self._board.write(event, step, values)

  def close(self) -> None:
    """Close the TensorBoard event file (metrics.jsonl is closed after every write)."""
    if self._board is not None:
      self._board.close()
      self._board = None


def _config_field(workdir: str, field: str, default):
  """`field` of the config.json in `workdir`; `default` without the file or the field."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f).get(field, default)


# Events stamped with the finished steps *before* the step they describe ('weights': the batch
# of step s is logged with step s): on resume from step s they belong to the redone steps.
PRE_STEP_EVENTS = (catalogue.WEIGHTS,)


def read_jsonl(path: str) -> list:
  """The JSON objects of a .jsonl file, in order; unreadable lines are dropped with one warning.

  The one reader of the package's .jsonl files (metrics.jsonl, quality.jsonl; gzip-compressed
  when the name ends in .gz).
  """
  records, bad = [], []
  with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
    lines = f.read().split(b'\n')
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError('not an object')
      records.append(record)
    except ValueError:
      bad.append(number)
  if bad:
    last = len([l for l in lines if l.strip()]) and bad == [max(
        i for i, l in enumerate(lines, 1) if l.strip())]
    what = 'a torn last line' if last else f'{len(bad)} unreadable lines'
    print(f'Warning: {path} has {what} (line {", ".join(map(str, bad[:5]))}); dropped it '
          f'(an interrupted write, e.g. a full disk or a power loss)', file=sys.stderr)
  return records


def read_metrics(workdir: str) -> list:
  """All events of a run, in order (a torn last line is dropped with a warning)."""
  return read_jsonl(os.path.join(workdir, 'metrics.jsonl'))


class WindowMeans:
  """Running means of scalar step metrics between two log events.

  A NaN metric was not measured at that step (the meta metrics of a step without a meta
  update, config.meta.update_every > 1): a scalar's mean is over the steps that measured it,
  and a metric no step of the window measured is left out. Non-scalar metrics (small arrays
  such as FaMUS's active-layer mask) are kept from the most recent step that measured them.
  """

  def __init__(self):
    self.sums, self.counts, self.last_arrays = {}, {}, {}

  def add(self, metrics: dict) -> None:
    for key, value in metrics.items():
      value = np.asarray(value)
      if value.ndim == 0:
        if np.isnan(value):
          continue
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.counts[key] = self.counts.get(key, 0) + 1
      elif value.size <= 512 and not (value.dtype.kind == 'f' and np.isnan(value).all()):
        self.last_arrays[key] = value

  def record(self) -> dict:
    """The unflushed sums and counts, for a checkpoint's record."""
    return {'window_sums': dict(self.sums), 'window_counts': dict(self.counts)}

  def restore(self, record: dict) -> None:
    """Continue from `record` (a checkpoint's; one count for every sum in older records)."""
    self.sums = dict(record['window_sums'])
    counts = record.get('window_counts')
    self.counts = (dict(counts) if counts is not None
                   else {k: record['window_count'] for k in self.sums})

  def flush(self) -> dict:
    out = {k: v / self.counts[k] for k, v in self.sums.items()}
    out.update(self.last_arrays)
    self.sums, self.counts, self.last_arrays = {}, {}, {}
    return out


def write_json(path: str, value: dict) -> None:
  """Write atomically (temp file + rename)."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump({k: _jsonable(v) for k, v in value.items()}, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
