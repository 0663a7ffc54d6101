"""Reading a prepared TFDS copy into host arrays, without TensorFlow, with its files checked.

`read_tfds(name, splits, data_dir)` opens `tfds.data_source(name, split=..., download=False)`
(random access over the copy's array_record shards). Before any record is read it checks the
copy's metadata files (`dataset_info.json`, `features.json`: there and JSON objects) and the
record count of every shard against the counts dataset_info.json lists: a shard that is not an
array_record file (no Riegeli/records signature), is cut short (not a whole number of 64 KiB
blocks, or fewer records) or is unreadable raises DataCorruptError naming the file and the
cause; a missing file raises DataNotFoundError naming it. Records are then read in chunks of
`CHUNK` (`__getitems__`), one at a time where a batched read fails, so that a damaged record
is named by its shard.
"""

import json
import os
from typing import Any, Sequence

import numpy as np

from famus_jax.data.source_errors import SourceFailed, damaged, missing
from famus_jax.errors import DataNotFoundError, first_line

# Records read per `__getitems__` call on a TFDS data source.
CHUNK = 1024

# The metadata files of a prepared TFDS copy (in <data_dir>/<name>/<version>/).
METADATA = ('dataset_info.json', 'features.json')

# The 64 bytes every Riegeli/records file (the container of array_record) begins with.
RIEGELI_SIGNATURE = bytes.fromhex(
    '83af70d10d884a3f' '0000000000000000' '4000000000000000' '91bac23c9287e1a9'
    '0000000000000000' 'e19f13c0e9b1c372' '7300000000000000' '0000000000000000')

# An array_record file is a whole number of 64 KiB blocks (its footer fills the last one).
ARRAY_RECORD_BLOCK = 1 << 16


def prepared_copy_dir(tfds: Any, name: str, data_dir: str) -> str | None:
  """<data_dir>/<name>/<version> of the version tfds reads, when data_dir is set and it exists.

  `name` may carry a builder config after a '/' (<data_dir>/<builder>/<config>/<version>).
  """
  if not data_dir:
    return None
  version = tfds.builder_cls(name.split('/', 1)[0]).VERSION
  path = os.path.join(data_dir, name, str(version))
  return path if os.path.isdir(path) else None


def check_metadata(copy_dir: str) -> None:
  """Checks that the metadata files of a prepared TFDS copy are there and hold JSON objects.

  Raises DataNotFoundError naming a missing file and DataCorruptError naming an unreadable one.
  """
  for name in METADATA:
    path = os.path.join(copy_dir, name)
    if not os.path.exists(path):
      raise missing('tfds', path, f'the TFDS copy in {copy_dir} needs {", ".join(METADATA)}')
    try:
      with open(path, 'rb') as f:
        value = json.loads(f.read().decode('utf-8'))
    except ValueError as e:  # also UnicodeDecodeError
      raise damaged('tfds', f'{path}: not a JSON file ({first_line(e)})') from e
    except OSError as e:
      raise SourceFailed(f'{path}: {first_line(e)}') from e
    if not isinstance(value, dict):
      raise damaged('tfds', f'{path}: not TFDS metadata (a JSON {type(value).__name__}, '
                             'not an object)')


def split_shards(source: Any, split: str) -> list[tuple[str, int]]:
  """[(path, number of records)] of the array_record shards a TFDS data source reads, in order.

  The counts are those dataset_info.json lists. Empty for a source without files on disk (e.g.
  under `tfds.testing.mock_data`).
  """
  info = getattr(source, 'dataset_info', None)
  if info is None or not info.data_dir or not os.path.isdir(info.data_dir):
    return []
  split_info = info.splits[split]
  return [(os.fspath(path), int(count))
          for path, count in zip(split_info.filepaths, split_info.shard_lengths)]


def shard_damage(path: str, expected: int, found: int | None, error: Exception | None) -> str:
  """Why an array_record shard does not hold its `expected` records (`found`, or `error`)."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(len(RIEGELI_SIGNATURE))
  if head != RIEGELI_SIGNATURE:
    return f'not an array_record file ({size} bytes without the Riegeli/records signature)'
  if size % ARRAY_RECORD_BLOCK:
    return (f'truncated ({size} bytes, not a whole number of the 64 KiB blocks of an '
            'array_record file)')
  if found is not None and found < expected:
    return f'truncated (it holds {found} of the {expected} records dataset_info.json lists)'
  if found is not None:
    return f'it holds {found} records, not the {expected} dataset_info.json lists'
  return f'damaged ({first_line(error)})'


def check_shard(open_reader: Any, path: str, expected: int) -> None:
  """Checks that the array_record shard `path` holds the `expected` records.

  `open_reader` is array_record's `ArrayRecordReader`. Raises DataNotFoundError when the shard is
  missing and DataCorruptError naming the file and the cause (truncated, not an array_record file,
  damaged) when its records cannot be counted or their number differs.
  """
  if not os.path.exists(path):
    raise missing('tfds', path, f'a shard of {expected} records that dataset_info.json lists')
  found, error = None, None
  try:
    reader = open_reader(path)
    try:
      found = reader.num_records()
    finally:
      reader.close()
  except Exception as e:  # pylint: disable=broad-except
    error = e  # Riegeli reports a damaged file as a RuntimeError.
  if error is None and found == expected:
    return
  raise damaged('tfds', f'{path}: {shard_damage(path, expected, found, error)}') from error


def record_error(e: Exception, index: int, shards: Sequence[tuple[str, int]]) -> Exception:
  """The error for record `index` of a split that could not be read or decoded."""
  if not isinstance(e, ImportError):  # ImportError: no image decoder (pillow or opencv)
    for path, count in shards:
      if index < count:
        return damaged('tfds', f'{path}: record {index} is damaged ({first_line(e)})')
      index -= count
  return SourceFailed(first_line(e))


def read_split(source: Any, shards: Sequence[tuple[str, int]] = (),
                     extra_keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """Reads every record of a TFDS data source into stacked numpy arrays.

  The result is {'image': uint8 (N, H, W, C), 'label': int32 (N,)} plus 'coarse_label' when the
  records have it, plus every key of `extra_keys` as int32 (N,) (e.g. CIFAR-10N's 'worse_label').
  `shards` lists the files the source reads (`split_shards`): a record that cannot be read or
  decoded, or records without one of `extra_keys`, then raise DataCorruptError naming the file;
  without them (e.g. a mocked source) SourceFailed.
  """
  n = len(source)
  if n == 0:
    raise SourceFailed('the split is empty')

  def read_one(i):
    try:
      return source[i]
    except Exception as e:  # pylint: disable=broad-except
      raise record_error(e, i, shards) from e

  first = read_one(0)
  keys = [k for k in ('image', 'label', 'coarse_label') if k in first]
  if 'image' not in keys or 'label' not in keys:
    raise SourceFailed(f'records lack image/label (keys: {sorted(first)})')
  lacking = [k for k in extra_keys if k not in first]
  if lacking:
    reason = f'its records lack {", ".join(map(repr, lacking))} (keys: {sorted(first)})'
    if shards:
      raise damaged('tfds', f'{shards[0][0]}: {reason}')
    raise SourceFailed(reason)
  keys += list(extra_keys)
  out = {k: np.empty((n,) + np.shape(first[k]),
                     np.uint8 if k == 'image' else np.int32) for k in keys}
  batched = hasattr(source, '__getitems__')
  for start in range(0, n, CHUNK):
    ids = list(range(start, min(n, start + CHUNK)))
    records = None
    if batched:
      try:
        records = source.__getitems__(ids)
      except Exception:  # pylint: disable=broad-except
        batched = False  # e.g. mocked sources, or a damaged record: one at a time names it.
    if records is None:
      records = [read_one(i) for i in ids]
    for k in keys:
      out[k][start:start + len(ids)] = np.stack([r[k] for r in records])
  return out


def read_tfds(name: str, splits: Sequence[str], data_dir: str,
              extra_keys: Sequence[str] = ()) -> dict[str, dict[str, np.ndarray]]:
  """Reads `splits` of the prepared TFDS copy `name` into host arrays, without TensorFlow.

  `name` is a TFDS builder name, with its builder config after a '/' (e.g.
  'controlled_noisy_web_labels/mini_imagenet_red'); `data_dir` is the TFDS data_dir ('' = TFDS's
  default). The result maps each split to the arrays `read_split` reads ('image' uint8
  (N, H, W, C), 'label' int32 (N,), 'coarse_label' when the records have it, and each of
  `extra_keys` int32 (N,)). The copy's metadata files and the record count of every shard are
  checked before the records are read. Raises SourceFailed when TFDS is not importable or no
  copy is prepared there, DataNotFoundError naming a missing file of a copy that is there, and
  DataCorruptError naming a damaged file and the cause.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SourceFailed(f'tensorflow_datasets is not importable ({e})') from e
  copy_dir = prepared_copy_dir(tfds, name, data_dir)
  if copy_dir:
    check_metadata(copy_dir)
  arrays = {}
  for split in splits:
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # pylint: disable=broad-except
      reason = first_line(e).removesuffix('. Possible root causes')
      if 'Random access data source' in reason:
        raise SourceFailed('no copy prepared in array_record format there (tfds: '
                            f'{reason})') from e
      if copy_dir:  # the copy is there, its metadata parse, yet tfds cannot open it
        info_path = os.path.join(copy_dir, 'dataset_info.json')
        raise damaged('tfds', f'{info_path}: tfds cannot open the copy ({reason})') from e
      raise SourceFailed(reason) from e
    shards = split_shards(source, split)
    for path, count in shards:
      check_shard(array_record_module.ArrayRecordReader, path, count)
    try:
      arrays[split] = read_split(source, shards, extra_keys)
    except (SourceFailed, DataNotFoundError):
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise SourceFailed(first_line(e)) from e
  return arrays
