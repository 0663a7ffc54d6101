"""Exceptions raised by famus_jax, and `first_line`, the one-line form of any exception."""


class ConfigError(ValueError):
  """A configuration field has an invalid value; the message names the field."""


class DataNotFoundError(FileNotFoundError):
  """A requested data set could not be found at the configured location."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss or gradient; the message names the step."""


class DataCorruptError(DataNotFoundError):
  """A data file is there but truncated, damaged or of the wrong format.

  The message names the file and the cause. A subclass of DataNotFoundError so that callers
  that catch "the data could not be loaded" catch it too; no other source is tried after it.
  """


class WorkdirMismatchError(RuntimeError):
  """The workdir holds a different run (its fingerprint differs from this config's).

  The message lists each differing field with its old and new value and how to proceed.
  Nothing in the workdir was written.
  """


class CheckpointDamagedError(RuntimeError):
  """No checkpoint in the workdir is intact; the message names each one and its damage."""


class CheckpointSaveError(OSError):
  """Writing a checkpoint failed (disk full, permissions); names the path and the last good one."""


class WorkdirLockedError(RuntimeError):
  """Another process holds the workdir's lock; the message names its pid."""


class DistributedError(RuntimeError):
  """A multi-process job could not start, or lost one of its processes.

  The message names this process, the step, the last checkpoint and that rerunning the same
  command on every host resumes from it.
  """


def first_line(e: BaseException) -> str:
  """'ExceptionType: the first line of its message', for one-line reasons inside a message."""
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'.rstrip(': ')
