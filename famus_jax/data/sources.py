"""Loading a whole data set into host memory, from one of several sources.

Sources (config.data_source):

- `tfds`: `tfds.data_source(name, split=..., data_dir=..., download=False)` (random access, no
  TensorFlow needed; the data set must already be prepared in array_record format). Its metadata
  files and the record count of every shard are checked before the records are read.
- `idx`: a directory with the four (Fashion-)MNIST IDX files, `.gz` or raw. Default for
  Fashion-MNIST: Debian's `dataset-fashion-mnist` directory.
- `cifar_archive`: a directory holding the official `cifar-10-python.tar.gz` /
  `cifar-100-python.tar.gz` or their extracted folders (data_dir, or when it is ''
  `download.default_data_dir()`: $FAMUS_JAX_DATA or ~/.cache/famus_jax). With `download=True` a
  missing archive is fetched there from the official URL (or `url`) over plain HTTP (see
  `download.py`).
- `synthetic`: a deterministic, learnable toy set (tests and smoke runs).
- `auto`: the first of the above that has the data (see `load_source`).

Only the CIFAR archives are ever downloaded, and only with `download=True`. Every loader returns
`RawData` with NHWC uint8 images and int32 labels. A copy of the data that is there but damaged
(a truncated or garbled file) raises DataCorruptError naming the file and the cause, one that lacks
a file raises DataNotFoundError naming it; no other source or copy is tried after either.

The data sets with real label noise (cifar10n, cifar100n, cnwl) are loaded by
`real_noise.load_real_noise` through this module's `read_tfds`, `load_cifar_archive`,
`download_cifar` and `load_first`, not by `load_source`.
"""

import dataclasses
import http.client
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from famus_jax.data import cifar_archive
from famus_jax.data import datasets
from famus_jax.data import download as download_lib
from famus_jax.data import idx
from famus_jax.errors import ConfigError
from famus_jax.errors import DataCorruptError
from famus_jax.errors import DataNotFoundError

# Records read per `__getitems__` call on a TFDS data source.
_TFDS_CHUNK = 1024

# The metadata files of a prepared TFDS copy (in <data_dir>/<name>/<version>/).
_TFDS_METADATA = ('dataset_info.json', 'features.json')

# The 64 bytes every Riegeli/records file (the container of array_record) begins with.
_RIEGELI_SIGNATURE = bytes.fromhex(
    '83af70d10d884a3f' '0000000000000000' '4000000000000000' '91bac23c9287e1a9'
    '0000000000000000' 'e19f13c0e9b1c372' '7300000000000000' '0000000000000000')

# An array_record file is a whole number of 64 KiB blocks (its footer fills the last one).
_ARRAY_RECORD_BLOCK = 1 << 16

# Which sources can serve which data set ('auto' serves all).
ALLOWED_SOURCES = {
    'cifar10': ('auto', 'tfds', 'cifar_archive'),
    'cifar100': ('auto', 'tfds', 'cifar_archive'),
    'fashion_mnist': ('auto', 'tfds', 'idx'),
    'synthetic': ('auto', 'synthetic'),
    # Real label noise (famus_jax/data/real_noise.py): the CIFAR-N annotations beside the CIFAR
    # archive, or the prepared TFDS copies.
    'cifar10n': ('auto', 'tfds', 'cifar_archive'),
    'cifar100n': ('auto', 'tfds', 'cifar_archive'),
    'cnwl': ('auto', 'tfds'),
    # Image files on disk (famus_jax/data/image_folder.py).
    'image_folder': ('auto', 'list_file', 'class_folders'),
}


@dataclasses.dataclass
class RawData:
  """A complete data set in host memory, before any corruption.

  train_images: uint8 (N, H, W, C).
  train_labels: int32 (N,), clean labels in [0, num_classes); in a real-noise data set -1 where
    the clean label is unknown (a CNWL web image).
  test_images: uint8 (M, H, W, C).
  test_labels: int32 (M,).
  num_classes: number of classes.
  class_names: tuple of num_classes names, index = label.
  description: where the data came from (source and path), for logs.
  train_coarse_labels: int32 (N,) CIFAR-100 super-class labels when the source provides them, else
    None.
  test_coarse_labels: int32 (M,) or None, likewise.
  train_noisy_labels: int32 (N,) the given training labels of a real-noise data set (CIFAR-N's
    human annotations, CNWL's web labels): the labels training sees. None for the other data
    sets, whose noise is synthetic (data/pipeline.py).
  meta_pool_images / meta_pool_labels: clean images (P, H, W, C) and int32 (P,) labels that the
    source provides for the meta set (an image folder's meta list); the meta set is drawn from
    them instead of the training set. None: the meta set comes out of the training set.

  An image-folder source (data/image_folder.py) gives `ImageFiles` instead of image arrays:
  array-likes of the same shape and dtype that decode the files they are indexed with.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  description: str
  train_coarse_labels: np.ndarray | None = None
  test_coarse_labels: np.ndarray | None = None
  train_noisy_labels: np.ndarray | None = None
  meta_pool_images: Any = None
  meta_pool_labels: np.ndarray | None = None


def check_dataset_and_source(dataset: str, source: str) -> None:
  """Raises ConfigError (naming the field and allowed values) if invalid."""
  if dataset not in datasets.DATASETS:
    raise ConfigError(f'dataset={dataset!r} is unknown; allowed values: '
                      f'{", ".join(datasets.DATASETS)}')
  if source not in datasets.SOURCES:
    raise ConfigError(f'data_source={source!r} is unknown; allowed values: '
                      f'{", ".join(datasets.SOURCES)}')
  if source not in ALLOWED_SOURCES[dataset]:
    raise ConfigError(
        f'data_source={source!r} cannot serve dataset={dataset!r}; allowed '
        f'for {dataset}: {", ".join(ALLOWED_SOURCES[dataset])}')


# ---------------------------------------------------------------------------
# Individual sources. Each raises _SourceFailed(reason) when its data is not there; load_source
# turns the collected reasons into one DataNotFoundError.


class _SourceFailed(Exception):
  """Internal: one source could not provide the data (message = reason)."""


# The same, for the loaders of other modules that run through `load_first` (cifar_n, cnwl).
SourceFailed = _SourceFailed


def _damaged(source: str, e: BaseException) -> DataCorruptError:
  """The error for a data file that is there but unreadable: no other source is tried."""
  return DataCorruptError(
      f'Damaged data (data_source {source}): {e}. Replace or remove the file; no other copy '
      f'of the data is used instead.')


def _missing(source: str, path: str, what: str) -> DataNotFoundError:
  """The error for a file missing from a copy of the data that is otherwise there."""
  return DataNotFoundError(
      f'Incomplete data (data_source {source}): {path} is missing ({what}). Restore it or '
      f'prepare the copy again; no other copy of the data is used instead.')


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'.rstrip(': ')


def _tfds_copy_dir(tfds: Any, name: str, data_dir: str) -> str | None:
  """<data_dir>/<name>/<version> of the version tfds reads, when data_dir is set and it exists.

  `name` may carry a builder config after a '/' (<data_dir>/<builder>/<config>/<version>).
  """
  if not data_dir:
    return None
  version = tfds.builder_cls(name.split('/', 1)[0]).VERSION
  path = os.path.join(data_dir, name, str(version))
  return path if os.path.isdir(path) else None


def _check_tfds_metadata(copy_dir: str) -> None:
  """Checks that the metadata files of a prepared TFDS copy are there and hold JSON objects.

  Raises DataNotFoundError naming a missing file and DataCorruptError naming an unreadable one.
  """
  for name in _TFDS_METADATA:
    path = os.path.join(copy_dir, name)
    if not os.path.exists(path):
      raise _missing('tfds', path, f'the TFDS copy in {copy_dir} needs {", ".join(_TFDS_METADATA)}')
    try:
      with open(path, 'rb') as f:
        value = json.loads(f.read().decode('utf-8'))
    except ValueError as e:  # also UnicodeDecodeError
      raise _damaged('tfds', f'{path}: not a JSON file ({_first_line(e)})') from e
    except OSError as e:
      raise _SourceFailed(f'{path}: {_first_line(e)}') from e
    if not isinstance(value, dict):
      raise _damaged('tfds', f'{path}: not TFDS metadata (a JSON {type(value).__name__}, '
                             'not an object)')


def _tfds_shards(source: Any, split: str) -> list[tuple[str, int]]:
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


def _shard_damage(path: str, expected: int, found: int | None, error: Exception | None) -> str:
  """Why an array_record shard does not hold its `expected` records (`found`, or `error`)."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(len(_RIEGELI_SIGNATURE))
  if head != _RIEGELI_SIGNATURE:
    return f'not an array_record file ({size} bytes without the Riegeli/records signature)'
  if size % _ARRAY_RECORD_BLOCK:
    return (f'truncated ({size} bytes, not a whole number of the 64 KiB blocks of an '
            'array_record file)')
  if found is not None and found < expected:
    return f'truncated (it holds {found} of the {expected} records dataset_info.json lists)'
  if found is not None:
    return f'it holds {found} records, not the {expected} dataset_info.json lists'
  return f'damaged ({_first_line(error)})'


def _check_tfds_shard(open_reader: Any, path: str, expected: int) -> None:
  """Checks that the array_record shard `path` holds the `expected` records.

  `open_reader` is array_record's `ArrayRecordReader`. Raises DataNotFoundError when the shard is
  missing and DataCorruptError naming the file and the cause (truncated, not an array_record file,
  damaged) when its records cannot be counted or their number differs.
  """
  if not os.path.exists(path):
    raise _missing('tfds', path, f'a shard of {expected} records that dataset_info.json lists')
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
  raise _damaged('tfds', f'{path}: {_shard_damage(path, expected, found, error)}') from error


def _record_error(e: Exception, index: int, shards: Sequence[tuple[str, int]]) -> Exception:
  """The error for record `index` of a split that could not be read or decoded."""
  if not isinstance(e, ImportError):  # ImportError: no image decoder (pillow or opencv)
    for path, count in shards:
      if index < count:
        return _damaged('tfds', f'{path}: record {index} is damaged ({_first_line(e)})')
      index -= count
  return _SourceFailed(_first_line(e))


def _read_tfds_split(source: Any, shards: Sequence[tuple[str, int]] = (),
                     extra_keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """Reads every record of a TFDS data source into stacked numpy arrays.

  The result is {'image': uint8 (N, H, W, C), 'label': int32 (N,)} plus 'coarse_label' when the
  records have it, plus every key of `extra_keys` as int32 (N,) (e.g. CIFAR-10N's 'worse_label').
  `shards` lists the files the source reads (`_tfds_shards`): a record that cannot be read or
  decoded, or records without one of `extra_keys`, then raise DataCorruptError naming the file;
  without them (e.g. a mocked source) _SourceFailed.
  """
  n = len(source)
  if n == 0:
    raise _SourceFailed('the split is empty')

  def read_one(i):
    try:
      return source[i]
    except Exception as e:  # pylint: disable=broad-except
      raise _record_error(e, i, shards) from e

  first = read_one(0)
  keys = [k for k in ('image', 'label', 'coarse_label') if k in first]
  if 'image' not in keys or 'label' not in keys:
    raise _SourceFailed(f'records lack image/label (keys: {sorted(first)})')
  lacking = [k for k in extra_keys if k not in first]
  if lacking:
    reason = f'its records lack {", ".join(map(repr, lacking))} (keys: {sorted(first)})'
    if shards:
      raise _damaged('tfds', f'{shards[0][0]}: {reason}')
    raise _SourceFailed(reason)
  keys += list(extra_keys)
  out = {k: np.empty((n,) + np.shape(first[k]),
                     np.uint8 if k == 'image' else np.int32) for k in keys}
  batched = hasattr(source, '__getitems__')
  for start in range(0, n, _TFDS_CHUNK):
    ids = list(range(start, min(n, start + _TFDS_CHUNK)))
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
  default). The result maps each split to the arrays `_read_tfds_split` reads ('image' uint8
  (N, H, W, C), 'label' int32 (N,), 'coarse_label' when the records have it, and each of
  `extra_keys` int32 (N,)). The copy's metadata files and the record count of every shard are
  checked before the records are read. Raises _SourceFailed when TFDS is not importable or no
  copy is prepared there, DataNotFoundError naming a missing file of a copy that is there, and
  DataCorruptError naming a damaged file and the cause.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _SourceFailed(f'tensorflow_datasets is not importable ({e})') from e
  copy_dir = _tfds_copy_dir(tfds, name, data_dir)
  if copy_dir:
    _check_tfds_metadata(copy_dir)
  arrays = {}
  for split in splits:
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # pylint: disable=broad-except
      reason = _first_line(e).removesuffix('. Possible root causes')
      if 'Random access data source' in reason:
        raise _SourceFailed('no copy prepared in array_record format there (tfds: '
                            f'{reason})') from e
      if copy_dir:  # the copy is there, its metadata parse, yet tfds cannot open it
        info_path = os.path.join(copy_dir, 'dataset_info.json')
        raise _damaged('tfds', f'{info_path}: tfds cannot open the copy ({reason})') from e
      raise _SourceFailed(reason) from e
    shards = _tfds_shards(source, split)
    for path, count in shards:
      _check_tfds_shard(array_record_module.ArrayRecordReader, path, count)
    try:
      arrays[split] = _read_tfds_split(source, shards, extra_keys)
    except (_SourceFailed, DataNotFoundError):
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise _SourceFailed(_first_line(e)) from e
  return arrays


def _load_tfds(dataset: str, data_dir: str) -> RawData:
  spec = datasets.DATASET_SPECS[dataset]
  splits = read_tfds(spec.tfds_name, ('train', 'test'), data_dir)
  train, test = splits['train'], splits['test']
  if train['image'].shape[1:] != spec.image_shape:
    raise _SourceFailed(f'images have shape {train["image"].shape[1:]}, '
                        f'expected {spec.image_shape}')
  where = data_dir or 'the TFDS default data_dir'
  return RawData(
      train_images=train['image'], train_labels=train['label'],
      test_images=test['image'], test_labels=test['label'],
      num_classes=spec.num_classes, class_names=spec.class_names,
      description=f'tfds:{spec.tfds_name} ({where})',
      train_coarse_labels=train.get('coarse_label'),
      test_coarse_labels=test.get('coarse_label'))


def _load_idx(dataset: str, directory: str) -> RawData:
  spec = datasets.DATASET_SPECS[dataset]
  if not idx.has_idx_files(directory):
    stems = [s for pair in idx.IDX_FILES.values() for s in pair]
    raise _SourceFailed(f'missing some of {", ".join(stems)} (.gz or raw)')
  try:
    train_images, train_labels = idx.read_idx_split(directory, 'train')
    test_images, test_labels = idx.read_idx_split(directory, 'test')
  except ValueError as e:
    raise _damaged('idx', e) from e
  except OSError as e:
    raise _SourceFailed(_first_line(e)) from e
  if train_images.shape[1:] != spec.image_shape:
    raise _SourceFailed(f'images have shape {train_images.shape[1:]}, '
                        f'expected {spec.image_shape}')
  return RawData(
      train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels,
      num_classes=spec.num_classes, class_names=spec.class_names,
      description=f'idx:{directory}')


def load_cifar_archive(dataset: str, directory: str) -> RawData:
  """The official CIFAR archive (or its folder) in `directory`; _SourceFailed when absent."""
  spec = datasets.DATASET_SPECS[dataset]
  path = cifar_archive.find_cifar_data(directory, dataset)
  if path is None:
    raise _SourceFailed(f'no {cifar_archive.describe_expected(dataset)}')
  try:
    arrays = cifar_archive.read_cifar(path, dataset)
  except ValueError as e:
    raise _damaged('cifar_archive', e) from e
  except OSError as e:
    raise _SourceFailed(f'{path}: {_first_line(e)}') from e
  return RawData(
      train_images=arrays.train_images, train_labels=arrays.train_labels,
      test_images=arrays.test_images, test_labels=arrays.test_labels,
      num_classes=spec.num_classes, class_names=arrays.class_names,
      description=f'cifar_archive:{path}',
      train_coarse_labels=arrays.train_coarse_labels,
      test_coarse_labels=arrays.test_coarse_labels)


def download_cifar(dataset: str, directory: str, url: str) -> RawData:
  """Fetches the archive into `directory` (`download.fetch_cifar`); reads it."""
  try:
    path = download_lib.fetch_cifar(dataset, directory, url)
  except (OSError, ValueError, http.client.HTTPException) as e:
    raise _SourceFailed(_first_line(e)) from e
  return load_cifar_archive(dataset, path)


def load_synthetic(synthetic_cfg: Any, seed: int) -> RawData:
  """A deterministic, learnable toy data set: `RawData` with images uint8 (N, S, S, channels).

  Each class c has a fixed random mean image (uniform in [40, 215]); an example is its class mean
  plus Gaussian noise (std 30), clipped to uint8. Training labels are balanced (arange % C,
  shuffled). Everything is a function of `seed` and `synthetic_cfg` (num_train, num_test,
  image_size, channels, num_classes).
  """
  c = synthetic_cfg
  num_classes, size, channels = c.num_classes, c.image_size, c.channels
  if num_classes < 2:
    raise ConfigError(f'synthetic.num_classes={num_classes} must be >= 2')
  pattern_rng = np.random.default_rng([seed, 7001])
  patterns = pattern_rng.uniform(40.0, 215.0,
                                 size=(num_classes, size, size, channels))

  def make(n, stream):
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    noise = rng.normal(0.0, 30.0, size=(n, size, size, channels))
    images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels

  train_images, train_labels = make(c.num_train, 7002)
  test_images, test_labels = make(c.num_test, 7003)
  return RawData(
      train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels,
      num_classes=num_classes,
      class_names=tuple(f'class_{i}' for i in range(num_classes)),
      description=(f'synthetic(seed={seed}, {c.num_train} train / '
                   f'{c.num_test} test, {size}x{size}x{channels}, '
                   f'{num_classes} classes)'))


# ---------------------------------------------------------------------------


def _how_to_provide(dataset: str) -> str:
  spec = datasets.DATASET_SPECS[dataset]
  lines = ['How to provide the data:']
  if dataset in cifar_archive.ARCHIVE_LAYOUT:
    archive = cifar_archive.ARCHIVE_LAYOUT[dataset][0]
    lines += [
        f'  * put the official {archive} (https://www.cs.toronto.edu/~kriz/'
        'cifar.html; or its extracted folder) in a directory DIR and pass '
        '--config.data_dir=DIR --config.data_source=cifar_archive',
        '  * or, with internet access, keep --config.download=True (the '
        'default) to fetch it into data_dir (or $FAMUS_JAX_DATA, else '
        '~/.cache/famus_jax, when data_dir is empty); --config.cifar_url=URL '
        'fetches the same archive from a mirror or a file:// path instead',
        '  * pass --config.download=False to never touch the network']
  else:
    lines.append(
        '  * put the four IDX files (train-images-idx3-ubyte.gz, '
        'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
        't10k-labels-idx1-ubyte.gz) in a directory DIR and pass '
        '--config.data_dir=DIR --config.data_source=idx (on Debian/Ubuntu, '
        '`apt-get install dataset-fashion-mnist` installs them in '
        f'{datasets.DEBIAN_FASHION_MNIST_DIR})')
  lines.append(
      f'  * or prepare TFDS {spec.tfds_name!r} in array_record format in '
      'TFDS_DIR and pass --config.data_dir=TFDS_DIR --config.data_source=tfds')
  return '\n'.join(lines)


def load_source(dataset: str, source: str, data_dir: str, synthetic_cfg: Any,
                seed: int = 0, *, download: bool = False,
                url: str = '') -> RawData:
  """Loads `dataset` from `source` into host memory.

  The result is a `RawData` (images uint8 (N, H, W, C), labels int32 (N,)). `dataset` is one of
  DATASETS and `source` one of SOURCES, compatible with `dataset`. `data_dir` is the directory for
  the source ('' = the source's default: the Debian directory for idx, the TFDS default data_dir
  for tfds, $FAMUS_JAX_DATA or ~/.cache/famus_jax for cifar_archive). `synthetic_cfg` is
  `config.synthetic` (only read for the synthetic source) and `seed` the seed of the synthetic
  source (ignored by the others). `download` is `config.download`: fetch a missing CIFAR archive
  over the network; it is False by default, so callers that do not pass it stay offline. `url` is
  `config.cifar_url`: '' = the official URL (md5-checked), else an http(s) or file:// URL of the
  same archive (not md5-checked).

  `auto` tries, in order:
  - fashion_mnist: idx in data_dir (if set), idx in the Debian directory
    /usr/share/datasets/fashion-mnist, then tfds.
  - cifar10 / cifar100: cifar_archive in data_dir (or, if data_dir is '', in
    `download.default_data_dir()`), then tfds, then (if `download`) fetching the archive into that
    same directory.
  - synthetic: synthetic.
  `cifar_archive` tries the local archive, then the download (if `download`).

  Raises ConfigError for an unknown dataset/source or a source that cannot serve it, and
  DataNotFoundError when no tried source had the data; its message lists each attempt (paths, URL
  and error) and how to provide the data. A copy that is there but damaged (e.g. a truncated
  array_record shard or a garbled dataset_info.json) raises DataCorruptError naming the file and
  the cause, and a TFDS copy that lacks one of its files raises DataNotFoundError naming it; no
  other source is tried after either, so an explicit data_dir is never silently replaced.
  """
  check_dataset_and_source(dataset, source)
  if dataset == 'synthetic':
    return load_synthetic(synthetic_cfg, seed)
  if dataset in datasets.REAL_NOISE_DATASETS:
    raise ValueError(f'dataset={dataset!r} carries real label noise and needs its label fields: '
                     'load it with build_data(config) (data/real_noise.py)')

  attempts = []  # (description, loader or None = skipped, reason in desc.)
  is_cifar = dataset in cifar_archive.ARCHIVE_LAYOUT
  cifar_dir = data_dir or download_lib.default_data_dir()
  if source == 'idx' or (source == 'auto' and not is_cifar):
    # An explicit data_dir is the only directory tried (never another copy of the data).
    dirs = [data_dir] if data_dir else [datasets.DEBIAN_FASHION_MNIST_DIR]
    for d in dict.fromkeys(dirs):
      attempts.append((f'idx at {d}', lambda d=d: _load_idx(dataset, d)))
  if source == 'cifar_archive' or (source == 'auto' and is_cifar):
    attempts.append((f'cifar_archive at {cifar_dir}',
                     lambda: load_cifar_archive(dataset, cifar_dir)))
  if source in ('auto', 'tfds'):
    attempts.append((f'tfds at {data_dir or "TFDS default data_dir"}',
                     lambda: _load_tfds(dataset, data_dir)))
  if source in ('auto', 'cifar_archive') and is_cifar:
    if download:
      fetch_url = download_lib.resolve_url(dataset, url)[0]
      attempts.append((f'download of {fetch_url} into {cifar_dir}',
                       lambda: download_cifar(dataset, cifar_dir, url)))
    else:
      attempts.append(('download: skipped, downloading is off '
                       '(config.download=False)', None))

  return load_first(dataset, source, data_dir, attempts, _how_to_provide(dataset))


def load_first(dataset: str, source: str, data_dir: str,
               attempts: Sequence[tuple[str, Callable[[], RawData] | None]],
               how_to_provide: str) -> RawData:
  """The `RawData` of the first attempt that has the data.

  `attempts` are (description, loader) pairs in order; a loader raises _SourceFailed (reason)
  when its data is not there, and None marks an attempt that was skipped (the reason is in its
  description). A fallback is printed. When every attempt failed, raises DataNotFoundError
  listing each attempt and its reason, then `how_to_provide`; `dataset`, `source` and `data_dir`
  are named in it. DataNotFoundError / DataCorruptError from a loader (a copy that is there but
  incomplete or damaged) propagate: no later attempt is tried.
  """
  failures = []
  for description, loader in attempts:
    if loader is None:
      failures.append(f'  * {description}')
      continue
    try:
      raw = loader()
    except _SourceFailed as e:
      failures.append(f'  * {description}: {e}')
      continue
    if failures:  # a fallback (data_dir is '' or the source is auto): say so in the log
      print(f'Data: loaded {raw.description} after: '
            + '; '.join(f.strip(' *') for f in failures))
    return raw
  message = (
      f'Could not load dataset {dataset!r} (data_source={source!r}, '
      f'data_dir={data_dir!r}). Tried:\n' + '\n'.join(failures) + '\n' + how_to_provide)
  raise DataNotFoundError(message) from None
