"""Reader for the official CIFAR-10 / CIFAR-100 "python version" archives.

On-disk format (https://www.cs.toronto.edu/~kriz/cifar.html):

- CIFAR-10: `cifar-10-python.tar.gz` holding `cifar-10-batches-py/` with `data_batch_1` ..
  `data_batch_5`, `test_batch` and `batches.meta`.
- CIFAR-100: `cifar-100-python.tar.gz` holding `cifar-100-python/` with `train`, `test` and `meta`.

Each file is a pickled dict (written by Python 2; read with `encoding='bytes'`, so keys are bytes):
b'data' is a uint8 (N, 3072) array, each row a 32x32 image stored channel-major (1024 red, 1024
green, 1024 blue, each row-major); labels are b'labels' (CIFAR-10) or b'fine_labels' and
b'coarse_labels' (CIFAR-100); the meta file names the classes (b'label_names', or
b'fine_label_names' / b'coarse_label_names').

The tarball is read in one streaming pass without extracting it; an already extracted folder works
too. Pickles are loaded with an unpickler that only allows the numpy array constructors these files
need, so a tampered file cannot run arbitrary code.
"""

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
from typing import Any
import zlib

import numpy as np

from famus_jax.data import datasets

# dataset -> (archive file name, folder name inside / extracted, train files, test files, meta file)
ARCHIVE_LAYOUT = {
    'cifar10': ('cifar-10-python.tar.gz', 'cifar-10-batches-py',
                tuple(f'data_batch_{i}' for i in range(1, 6)), ('test_batch',),
                'batches.meta'),
    'cifar100': ('cifar-100-python.tar.gz', 'cifar-100-python',
                 ('train',), ('test',), 'meta'),
}

_ALLOWED_GLOBALS = {
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
    ('_codecs', 'encode'),  # bytes objects in protocol-2 pickles from Python 3
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
  """Unpickler that can only build numpy arrays, dtypes and plain containers."""

  def find_class(self, module: str, name: str) -> Any:
    if module.startswith('numpy.core'):  # Pickles from numpy < 2.
      module = 'numpy._core' + module[len('numpy.core'):]
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(
          f'the pickle refers to {module}.{name}, which a file of numpy arrays '
          'never needs; refusing to load it')
    return super().find_class(module, name)


def unpickle_arrays(data: bytes, name: str, what: str = 'a CIFAR pickle') -> Any:
  """The object pickled in `data` (from file `name`), built only from numpy arrays, dtypes,
  scalars and plain containers (Python 2 strings come back as bytes).

  Raises ValueError naming `name` when the pickle is damaged or refers to anything else (code,
  torch storages); `what` says what the file should have been.
  """
  try:
    return _ArrayOnlyUnpickler(io.BytesIO(data), encoding='bytes').load()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{name}: damaged or not {what} ({e})') from e


def _load_pickle(data: bytes, name: str) -> dict[bytes, Any]:
  obj = unpickle_arrays(data, name)
  if not isinstance(obj, dict):
    raise ValueError(f'{name}: expected a pickled dict, got {type(obj)}')
  # Accept str keys too (files re-pickled by Python 3 code).
  return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


@dataclasses.dataclass
class CifarArrays:
  """Arrays read from a CIFAR archive.

  train_images, test_images: uint8 (N, 32, 32, 3).
  train_labels, test_labels: int32 (N,) (fine labels for CIFAR-100).
  train_coarse_labels, test_coarse_labels: int32 (N,) CIFAR-100 super-class labels, None for
    CIFAR-10.
  class_names: fine class names from the meta file.
  coarse_class_names: CIFAR-100 super-class names, else None.
  path: the archive or folder that was read.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  train_coarse_labels: np.ndarray | None
  test_coarse_labels: np.ndarray | None
  class_names: tuple[str, ...]
  coarse_class_names: tuple[str, ...] | None
  path: str


def find_cifar_data(directory: str, dataset: str) -> str | None:
  """Locates CIFAR data under `directory`: the path of the archive or extracted folder, or None.

  It looks for, in order: `directory` itself being the `.tar.gz`, the official `.tar.gz` inside
  `directory`, the extracted folder inside `directory`, and `directory` being the extracted folder.
  """
  if not directory:
    return None
  archive, folder, train_files, _, _ = ARCHIVE_LAYOUT[dataset]
  if os.path.isfile(directory) and directory.endswith('.tar.gz'):
    return directory
  if os.path.isfile(os.path.join(directory, archive)):
    return os.path.join(directory, archive)
  for candidate in (os.path.join(directory, folder), directory):
    if os.path.isfile(os.path.join(candidate, train_files[0])):
      return candidate
  return None


def describe_expected(dataset: str) -> str:
  """Human-readable list of what `find_cifar_data` accepts."""
  archive, folder, _, _, _ = ARCHIVE_LAYOUT[dataset]
  return f'{archive} or an extracted {folder}/ folder'


def _archive_damage(path: str, e: BaseException) -> ValueError:
  """A ValueError naming the archive and what is wrong with it (truncated or damaged)."""
  text = f'{type(e).__name__}: {e}'
  if isinstance(e, EOFError) or 'unexpected end' in str(e) or 'ended before' in str(e):
    return ValueError(f'{path}: the archive is truncated ({text}); fetch it again')
  if isinstance(e, (zlib.error, gzip.BadGzipFile)) or 'zlib' in str(e) or 'CRC' in str(e):
    return ValueError(f'{path}: the archive is damaged: its compressed data is corrupted '
                      f'({text}); fetch it again')
  return ValueError(f'{path}: the archive is damaged ({text}); fetch it again')


def _read_tar(path: str, names: set[str]) -> dict[str, bytes]:
  """{basename: bytes} of the wanted members, in one streaming pass over the archive.

  Raises ValueError naming the archive when it is not a tar file, is truncated, its compressed
  data is corrupted, or a member header in the middle is damaged (tarfile would silently stop
  there, which would read as missing batch files).
  """
  found = {}
  try:
    tar = tarfile.open(path, 'r:*')
  except (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise ValueError(f'{path}: not a CIFAR archive (neither a tar file nor a gzip-compressed '
                     f'one: {type(e).__name__}: {e})') from e
  with tar:
    try:
      for member in tar:
        base = os.path.basename(member.name)
        if member.isfile() and base in names and base not in found:
          found[base] = tar.extractfile(member).read()
      if set(names) - set(found):
        # Did the member list end early? The rest of a complete tar file is zero blocks.
        stop = tar.offset
        tar.fileobj.seek(stop)
        rest = tar.fileobj.read()
        if rest.strip(b'\0'):
          raise ValueError(f'{path}: damaged tar member header at byte {stop} of the '
                           f'uncompressed archive ({len(rest)} bytes after it are unreadable); '
                           f'fetch it again')
    except ValueError:
      raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
      raise _archive_damage(path, e) from e
  return found


def _read_files(path: str, names: set[str]) -> dict[str, bytes]:
  """{basename: bytes} for the wanted files of an archive (see `_read_tar`) or folder."""
  found = {}
  if os.path.isfile(path):
    found = _read_tar(path, names)
  else:
    for base in names:
      file_path = os.path.join(path, base)
      if os.path.isfile(file_path):
        with open(file_path, 'rb') as f:
          found[base] = f.read()
  return found


def _decode_names(values: Any) -> tuple[str, ...]:
  return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _to_nhwc(data: Any, name: str) -> np.ndarray:
  data = np.asarray(data, dtype=np.uint8)
  if data.ndim != 2 or data.shape[1] != 3072:
    raise ValueError(f'{name}: b"data" has shape {data.shape}, '
                     'expected (N, 3072)')
  return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def read_cifar(path: str, dataset: str) -> CifarArrays:
  """Reads CIFAR-10 or CIFAR-100 from the official archive or its folder.

  `path` comes from `find_cifar_data` (a .tar.gz file or an extracted folder) and `dataset` is
  'cifar10' or 'cifar100'. The result is a `CifarArrays` with NHWC uint8 images and int32 labels.
  Raises FileNotFoundError when a batch file is missing from the archive / folder, and ValueError
  when a batch file is malformed.
  """
  _, _, train_files, test_files, meta_file = ARCHIVE_LAYOUT[dataset]
  wanted = set(train_files) | set(test_files) | {meta_file}
  files = _read_files(path, wanted)
  missing = [f for f in list(train_files) + list(test_files) if f not in files]
  if missing:
    raise FileNotFoundError(f'{path} lacks {", ".join(missing)}')

  fine_key = b'labels' if dataset == 'cifar10' else b'fine_labels'

  def read_split(names):
    images, labels, coarse = [], [], []
    for name in names:
      batch = _load_pickle(files[name], f'{path}:{name}')
      for key in (b'data', fine_key):
        if key not in batch:
          raise ValueError(f'{path}:{name}: no {key!r} entry (keys: {sorted(batch)})')
      images.append(_to_nhwc(batch[b'data'], f'{path}:{name}'))
      labels.append(np.asarray(batch[fine_key], dtype=np.int32))
      if b'coarse_labels' in batch:
        coarse.append(np.asarray(batch[b'coarse_labels'], dtype=np.int32))
      if len(labels[-1]) != len(images[-1]):
        raise ValueError(f'{path}:{name}: {len(images[-1])} images but '
                         f'{len(labels[-1])} labels')
    coarse_labels = (np.concatenate(coarse) if len(coarse) == len(names)
                     else None)
    return np.concatenate(images), np.concatenate(labels), coarse_labels

  train_images, train_labels, train_coarse = read_split(train_files)
  test_images, test_labels, test_coarse = read_split(test_files)

  spec = datasets.DATASET_SPECS[dataset]
  class_names, coarse_names = spec.class_names, None
  if dataset == 'cifar100':
    coarse_names = datasets.CIFAR100_COARSE_CLASSES
  if meta_file in files:
    meta = _load_pickle(files[meta_file], f'{path}:{meta_file}')
    key = b'label_names' if dataset == 'cifar10' else b'fine_label_names'
    if key in meta and len(meta[key]) == spec.num_classes:
      class_names = _decode_names(meta[key])
    if b'coarse_label_names' in meta:
      coarse_names = _decode_names(meta[b'coarse_label_names'])
  return CifarArrays(
      train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels,
      train_coarse_labels=train_coarse, test_coarse_labels=test_coarse,
      class_names=class_names, coarse_class_names=coarse_names, path=path)
