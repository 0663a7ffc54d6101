"""TensorBoard event files beside metrics.jsonl (config.tensorboard).

The scalar values of the 'train' and 'eval' events go to <workdir>/tensorboard/ as TensorBoard
event files, tagged '<event>/<name>' (e.g. 'train/train_loss', 'eval/test_accuracy') with the
event's step as the x axis, so that `tensorboard --logdir WORKDIR` shows the curves while the run
goes. metrics.jsonl stays the record; the event files are a view of it. Lists and strings are
left out, and the values are TensorBoard's float32.

The files are written with tensorboardX's synchronous event writer (no TensorFlow, no writer
thread), flushed after every event, so a killed run loses nothing it logged. Each opening of the
log starts a new file; when the log is truncated for a resume, the file records a purge marker
at the first step to be done again (`purge_from`): TensorBoard then hides the older files' points
of the steps the resumed run does again, as metrics.jsonl drops their events.

tensorboardX is an optional dependency (`pip install tensorboardX`, or the package's
`tensorboard` extra); with config.tensorboard=True and no tensorboardX, `check_available` stops
the run before anything is compiled. It is imported by the first writer only: tensorboardX
imports PyTorch where that is installed, which a run without TensorBoard files does not pay for.
"""

import importlib.util
import numbers
import os
import time
import weakref

from famus_jax.errors import ConfigError

# The metrics.jsonl events whose scalars are written.
EVENTS = ('train', 'eval')
DIRECTORY = 'tensorboard'
PACKAGE = 'tensorboardX'
INSTALL = 'pip install tensorboardX'


def check_available() -> None:
  """Raise ConfigError (one line, naming the field and the install command) without tensorboardX."""
  if importlib.util.find_spec(PACKAGE) is None:
    raise ConfigError('config.tensorboard=True writes TensorBoard event files with tensorboardX, '
                      f'which is not installed: {INSTALL} (or pip install "famus_jax[tensorboard]"'
                      '), or set config.tensorboard=False')


def scalars(values: dict) -> dict:
  """The entries of an event's values that TensorBoard draws as scalars (numbers, not bools)."""
  out = {}
  for key, value in values.items():
    if getattr(value, 'shape', None) == ():  # a NumPy or JAX scalar
      value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      continue
    out[key] = float(value)
  return out


class TensorBoardWriter:
  """Appends the scalars of 'train' and 'eval' events to a new event file in <workdir>/tensorboard/.

  Each writer opens a file of its own; `close` (or the writer's garbage collection) closes it.
  """

  def __init__(self, workdir: str):
    check_available()
    # pylint: disable=import-outside-toplevel
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2, summary_pb2
    # pylint: enable=import-outside-toplevel
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self.directory = os.path.join(workdir, DIRECTORY)
    os.makedirs(self.directory, exist_ok=True)
    # A nanosecond suffix keeps files opened within the same second apart, in opening order.
    self._events = EventsWriter(os.path.join(self.directory, 'events'),
                                filename_suffix=f'.{time.time_ns()}')
    self._close = weakref.finalize(self, self._events.close)
    self._events.flush()

  def purge_from(self, step: int) -> None:
    """Hide the points at `step` and after that earlier files hold (TensorBoard's purge marker).

    A SessionLog START event at `step`: TensorBoard drops the points at that step and after that
    it has read before it, from every tag.
    """
    event_pb2 = self._event_pb2
    self._events.write_event(event_pb2.Event(
        wall_time=time.time(), step=int(step),
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._events.flush()

  def write(self, event: str, step: int, values: dict) -> None:
    if event not in EVENTS:
      return
    points = scalars(values)
    if not points:
      return
    summary_pb2 = self._summary_pb2
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=f'{event}/{key}', simple_value=value)
        for key, value in points.items()])
    self._events.write_event(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                                   summary=summary))
    self._events.flush()

  def close(self) -> None:
    self._close()
