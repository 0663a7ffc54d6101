"""Loading a whole data set into host memory, from one of several sources.

Sources (config.data_source):

- `tfds`: `tfds.data_source(name, split=..., data_dir=..., download=False)` (random access, no
  TensorFlow needed; the data set must already be prepared in array_record format), read by
  `tfds_source.read_tfds`: its metadata files and the record count of every shard are checked
  before the records are read.
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
from typing import Any, Callable, Sequence

import numpy as np

from famus_jax.data import cifar_archive
from famus_jax.data import datasets
from famus_jax.data import download as download_lib
from famus_jax.data import idx
from famus_jax.data.source_errors import SourceFailed, damaged
from famus_jax.data.tfds_source import read_tfds
from famus_jax.errors import ConfigError
from famus_jax.errors import DataNotFoundError, first_line

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
    # In-memory arrays handed to the Python API (famus_jax/api.py); nothing is loaded.
    'arrays': ('auto',),
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
# Individual sources. Each raises SourceFailed(reason) when its data is not there; load_source
# turns the collected reasons into one DataNotFoundError.


def _load_tfds(dataset: str, data_dir: str) -> RawData:
  spec = datasets.DATASET_SPECS[dataset]
  splits = read_tfds(spec.tfds_name, ('train', 'test'), data_dir)
  train, test = splits['train'], splits['test']
  if train['image'].shape[1:] != spec.image_shape:
    raise SourceFailed(f'images have shape {train["image"].shape[1:]}, '
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
    raise SourceFailed(f'missing some of {", ".join(stems)} (.gz or raw)')
  try:
    train_images, train_labels = idx.read_idx_split(directory, 'train')
    test_images, test_labels = idx.read_idx_split(directory, 'test')
  except ValueError as e:
    raise damaged('idx', e) from e
  except OSError as e:
    raise SourceFailed(first_line(e)) from e
  if train_images.shape[1:] != spec.image_shape:
    raise SourceFailed(f'images have shape {train_images.shape[1:]}, '
                        f'expected {spec.image_shape}')
  return RawData(
      train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels,
      num_classes=spec.num_classes, class_names=spec.class_names,
      description=f'idx:{directory}')


def load_cifar_archive(dataset: str, directory: str) -> RawData:
  """The official CIFAR archive (or its folder) in `directory`; SourceFailed when absent."""
  spec = datasets.DATASET_SPECS[dataset]
  path = cifar_archive.find_cifar_data(directory, dataset)
  if path is None:
    raise SourceFailed(f'no {cifar_archive.describe_expected(dataset)}')
  try:
    arrays = cifar_archive.read_cifar(path, dataset)
  except ValueError as e:
    raise damaged('cifar_archive', e) from e
  except OSError as e:
    raise SourceFailed(f'{path}: {first_line(e)}') from e
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
    raise SourceFailed(first_line(e)) from e
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

  `attempts` are (description, loader) pairs in order; a loader raises SourceFailed (reason)
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
    except SourceFailed as e:
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
