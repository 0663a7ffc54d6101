"""The errors of the data sources, shared by `sources` and `tfds_source`.

A source that does not have the data raises `SourceFailed(reason)`; `sources.load_source` and
`sources.load_first` try the next one and collect the reasons. A copy that is there but damaged
(`damaged`) or lacks a file (`missing`) stops the search: no other copy is used instead.
"""

from famus_jax.errors import DataCorruptError
from famus_jax.errors import DataNotFoundError


class SourceFailed(Exception):
  """One source could not provide the data (message = reason); the next source is tried."""


def damaged(source: str, e) -> DataCorruptError:
  """The error for a data file that is there but unreadable: no other source is tried."""
  return DataCorruptError(
      f'Damaged data (data_source {source}): {e}. Replace or remove the file; no other copy '
      f'of the data is used instead.')


def missing(source: str, path: str, what: str) -> DataNotFoundError:
  """The error for a file missing from a copy of the data that is otherwise there."""
  return DataNotFoundError(
      f'Incomplete data (data_source {source}): {path} is missing ({what}). Restore it or '
      f'prepare the copy again; no other copy of the data is used instead.')
