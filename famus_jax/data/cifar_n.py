"""CIFAR-10N / CIFAR-100N: the CIFAR training sets with real human annotations.

Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World Human Annotations",
ICLR 2022; the files are in https://github.com/UCSC-REAL/cifar-10-100n. Every CIFAR training image
keeps its official (clean) label and gets human labels; `config.noisy_label_set` chooses the set
that training sees:

| dataset | noisy_label_set | key in the files | wrong (official file) |
|---|---|---|---|
| cifar10n | aggre | aggre_label (majority vote of the three annotators) | 9.01% |
| cifar10n | worst | worse_label (a wrong label of the three if there is one) | 40.21% |
| cifar10n | random1, 2, 3 | random_label1, 2, 3 (annotator 1, 2, 3) | 17.23, 18.12, 17.64% |
| cifar100n | noisy | noisy_label (noise_label in the TFDS-order files and TFDS) | 40.20% |

The test set is the clean CIFAR test set. Two sources:

- `cifar_archive`: the official CIFAR python archive (`cifar_archive.py`) plus one annotation file,
  in the archive's directory (data_dir) or at `config.noisy_label_file`; in a directory the first
  of these is used:
  1. `CIFAR-10_human.pt` / `CIFAR-100_human.pt` (the repository's `data/` files): torch's zip
     format whose `data.pkl` pickles a dict of numpy arrays. It is read with `zipfile` and the
     array-only unpickler of cifar_archive.py, so torch is not needed; a file re-saved with torch
     tensors is read with `torch.load(weights_only=True)` when torch is installed.
  2. `CIFAR-10_human.npy` / `CIFAR-100_human.npy` (an earlier release): the same dict, np.save'd.
  3. `CIFAR-10_human_ordered.npy` / `CIFAR-100_human_ordered.npy`, or the CSV of TFDS's manual
     download `CIFAR-10_human_annotations.csv` / `CIFAR-100_human_annotations.csv` (a header of
     keys, one row per image): in the order of `tfds.load('cifar10')`, so `image_order_c10.npy` /
     `image_order_c100.npy` must lie beside them; row j annotates CIFAR training image order[j].
  Files 1 and 2 are in the CIFAR training-set order (data_batch_1..5, or train), which is the order
  of the archive's images.
- `tfds`: a prepared `cifar10_n` / `cifar100_n` copy (array_record): each record's 'label' is the
  clean label and the label set's key (the table) the human one.

Checks: an annotation file must hold `clean_label` and the label set's key, each one integer label
in [0, C) per training image, and `clean_label` must equal the archive's labels (a file of the
other data set, or in another order, fails here). A file failing any of them, or unreadable,
raises DataCorruptError naming the file and the key; a missing file raises DataNotFoundError
naming the paths tried and where to get the files.
"""

import csv
import dataclasses
import os
import zipfile
from typing import Any

import numpy as np

from famus_jax.data import cifar_archive
from famus_jax.data import datasets
from famus_jax.data import download as download_lib
from famus_jax.data import sources
from famus_jax.errors import ConfigError
from famus_jax.errors import DataCorruptError
from famus_jax.errors import DataNotFoundError

DATASETS = ('cifar10n', 'cifar100n')
BASE_DATASET = {'cifar10n': 'cifar10', 'cifar100n': 'cifar100'}
LABEL_SETS = {'cifar10n': ('aggre', 'worst', 'random1', 'random2', 'random3'),
              'cifar100n': ('noisy',)}
# The keys of a label set in the annotation files (any one of them) and in the TFDS records.
FILE_KEYS = {'aggre': ('aggre_label',), 'worst': ('worse_label',),
             'random1': ('random_label1',), 'random2': ('random_label2',),
             'random3': ('random_label3',), 'noisy': ('noisy_label', 'noise_label')}
TFDS_KEYS = {'aggre': 'aggre_label', 'worst': 'worse_label', 'random1': 'random_label1',
             'random2': 'random_label2', 'random3': 'random_label3', 'noisy': 'noise_label'}
CLEAN_KEY = 'clean_label'
FILE_SUFFIXES = ('.pt', '.npy', '.csv')
IMAGE_ORDER_FILES = {'cifar10n': 'image_order_c10.npy', 'cifar100n': 'image_order_c100.npy'}
REPOSITORY = 'https://github.com/UCSC-REAL/cifar-10-100n'
_PREFIX = {'cifar10n': 'CIFAR-10', 'cifar100n': 'CIFAR-100'}


def annotation_files(dataset: str) -> tuple[str, ...]:
  """The official annotation file names of `dataset`, in the order a directory is searched."""
  p = _PREFIX[dataset]
  return (f'{p}_human.pt', f'{p}_human.npy', f'{p}_human_ordered.npy',
          f'{p}_human_annotations.csv')


def in_tfds_order(path: str) -> bool:
  """Whether the annotation file `path` is in TFDS's image order (by its name; see above)."""
  return path.endswith(('_ordered.npy', '.csv'))


@dataclasses.dataclass(frozen=True)
class Annotations:
  """One label set of a CIFAR-N annotation file, in the CIFAR training-set order.

  clean: int32 (N,) the file's clean labels.
  noisy: int32 (N,) the chosen label set's labels.
  key: the file's key of `noisy` (e.g. 'worse_label').
  path: the annotation file (with the image-order file it needed, if any), for messages.
  """
  clean: np.ndarray
  noisy: np.ndarray
  key: str
  path: str


def check_config(config: Any) -> None:
  """ConfigError naming `noisy_label_set` or `noisy_label_file` when they do not fit the dataset."""
  allowed = LABEL_SETS[config.dataset]
  if config.noisy_label_set not in allowed:
    raise ConfigError(f'config.noisy_label_set={config.noisy_label_set!r} is not one of '
                      f'{list(allowed)} for dataset={config.dataset!r}')
  label_file = config.noisy_label_file
  if label_file and not label_file.endswith(FILE_SUFFIXES):
    raise ConfigError(f'config.noisy_label_file={label_file!r} must be a CIFAR-N annotation file '
                      f'ending with one of {list(FILE_SUFFIXES)} (e.g. '
                      f'{annotation_files(config.dataset)[0]})')
  if label_file and config.data_source == 'tfds':
    raise ConfigError(f'config.noisy_label_file={label_file!r} goes with the CIFAR archive, but '
                      "config.data_source='tfds' reads the labels from the TFDS copy: set "
                      "config.data_source='cifar_archive' or 'auto', or noisy_label_file=''")


def find_annotation_file(directory: str, dataset: str) -> str | None:
  """The first of `annotation_files(dataset)` in `directory`, or None."""
  for name in annotation_files(dataset):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def _corrupt(path: str, problem: str) -> DataCorruptError:
  return DataCorruptError(f'Damaged CIFAR-N annotation file {path}: {problem}. Get it again from '
                          f'{REPOSITORY}; no other copy of the data is used instead.')


def _as_table(obj: Any, path: str) -> dict[str, Any]:
  """The annotation dict with str keys (a 0-d object array, as np.save stores a dict, unwrapped)."""
  if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
    obj = obj.item()
  if not isinstance(obj, dict):
    raise _corrupt(path, f'it holds a {type(obj).__name__}, not a dict of label arrays')
  return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _torch_table(path: str, error: Exception) -> Any:
  """A .pt file that the array-only unpickler refused (`error`), read by torch if installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise _corrupt(path, f'{error}; if it holds torch tensors, install torch to read it') from None
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise _corrupt(path, f'{error}; torch.load fails too ({type(e).__name__}: {e})') from e
  if isinstance(obj, dict):
    obj = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in obj.items()}
  return obj


def _read_pt(path: str) -> Any:
  """The object a torch zip-format file pickles in its data.pkl (see the module docstring)."""
  try:
    with zipfile.ZipFile(path) as archive:
      names = [n for n in archive.namelist() if n == 'data.pkl' or n.endswith('/data.pkl')]
      if not names:
        raise _corrupt(path, f'a zip file without data.pkl (members: {archive.namelist()[:5]})')
      data = archive.read(names[0])
  except (zipfile.BadZipFile, EOFError, ValueError) as e:
    raise _corrupt(path, f'not a zip-format torch file, or truncated ({type(e).__name__}: '
                         f'{e})') from e
  try:
    return cifar_archive.unpickle_arrays(data, path, 'a pickle of label arrays')
  except ValueError as e:
    return _torch_table(path, e)


def _read_npy(path: str) -> Any:
  """The object an .npy file of dtype object holds (np.save of a dict), unpickled array-only."""
  with open(path, 'rb') as f:
    try:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(f)
      else:
        _, _, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
      raise _corrupt(path, f'not an .npy file ({e})') from e
    if dtype != object:
      raise _corrupt(path, f'an .npy array of {dtype}, not the pickled dict of label arrays')
    payload = f.read()
  try:
    return cifar_archive.unpickle_arrays(payload, path, 'a pickle of label arrays')
  except ValueError as e:
    raise _corrupt(path, str(e)) from e


def _read_csv(path: str) -> dict[str, list[str]]:
  """{column name: values} of a CSV with a header row."""
  try:
    with open(path, newline='', encoding='utf-8') as f:
      rows = list(csv.reader(f))
  except (UnicodeDecodeError, csv.Error) as e:
    raise _corrupt(path, f'not a CSV file ({e})') from e
  if not rows:
    raise _corrupt(path, 'the file is empty')
  header, body = rows[0], [r for r in rows[1:] if r]
  for number, row in enumerate(body, 2):
    if len(row) != len(header):
      raise _corrupt(path, f'line {number} has {len(row)} fields, the header {len(header)}')
  return {name: [row[i] for row in body] for i, name in enumerate(header)}


def read_table(path: str) -> dict[str, Any]:
  """All columns of an annotation file (.pt, .npy or .csv; see the module docstring) by key."""
  if path.endswith('.pt'):
    return _as_table(_read_pt(path), path)
  if path.endswith('.npy'):
    return _as_table(_read_npy(path), path)
  return _read_csv(path)


def _labels(table: dict[str, Any], keys: tuple[str, ...], path: str,
            num_classes: int) -> tuple[str, np.ndarray]:
  """(key, int32 (N,) labels) of the first of `keys` in `table`, checked to lie in [0, C)."""
  key = next((k for k in keys if k in table), None)
  if key is None:
    raise _corrupt(path, f'no {" or ".join(map(repr, keys))} entry (keys: {sorted(table)})')
  try:
    values = np.asarray(table[key])
    if values.dtype.kind in 'US':  # a CSV column
      values = values.astype(np.int64)
  except (TypeError, ValueError) as e:
    raise _corrupt(path, f'{key!r} does not hold integer labels ({e})') from e
  if values.ndim != 1 or values.dtype.kind not in 'iu':
    raise _corrupt(path, f'{key!r} is not a vector of integer labels (dtype {values.dtype}, '
                         f'shape {values.shape})')
  outside = np.flatnonzero((values < 0) | (values >= num_classes))
  if outside.size:
    raise _corrupt(path, f'{key!r} holds {outside.size} labels outside [0, {num_classes}) '
                         f'(the first: {values[outside[0]]} at index {outside[0]})')
  return key, values.astype(np.int32)


def _training_set_order(labels: list[np.ndarray], path: str,
                        dataset: str) -> tuple[list[np.ndarray], str]:
  """`labels` (TFDS order) moved to the CIFAR training-set order by the image-order file.

  Returns the reordered labels and the description of the files read.
  """
  order_path = os.path.join(os.path.dirname(path), IMAGE_ORDER_FILES[dataset])
  if not os.path.isfile(order_path):
    raise DataNotFoundError(
        f'{path} is in the TFDS image order and needs {order_path}, which is missing: put '
        f'{IMAGE_ORDER_FILES[dataset]} from {REPOSITORY} beside it (or use '
        f'{annotation_files(dataset)[0]}, which is in the CIFAR order)')
  try:
    order = np.load(order_path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise _corrupt(order_path, f'not an .npy array ({e})') from e
  n = len(labels[0])
  if (order.ndim != 1 or order.dtype.kind not in 'iu'
      or not np.array_equal(np.sort(order), np.arange(n))):
    raise _corrupt(order_path, f'not a permutation of the {n} annotation rows of {path} '
                               f'(dtype {order.dtype}, shape {order.shape})')
  moved = []
  for values in labels:
    out = np.empty_like(values)
    out[order] = values
    moved.append(out)
  return moved, f'{path} + {os.path.basename(order_path)}'


def read_annotations(path: str, dataset: str, label_set: str) -> Annotations:
  """The clean labels and label set `label_set` of the CIFAR-N file `path`, in CIFAR order.

  `path` is any of the formats of the module docstring (by its name); `dataset` is 'cifar10n' or
  'cifar100n'. Raises DataCorruptError naming the file and the key when the file is unreadable, a
  key is missing, or labels are not integers in [0, C) or differ in number, and
  DataNotFoundError when a TFDS-order file lacks its image-order file.
  """
  num_classes = datasets.DATASET_SPECS[dataset].num_classes
  table = read_table(path)
  _, clean = _labels(table, (CLEAN_KEY,), path, num_classes)
  key, noisy = _labels(table, FILE_KEYS[label_set], path, num_classes)
  if len(noisy) != len(clean):
    raise _corrupt(path, f'{key!r} has {len(noisy)} labels but {CLEAN_KEY!r} {len(clean)}')
  described = path
  if in_tfds_order(path):
    (clean, noisy), described = _training_set_order([clean, noisy], path, dataset)
  return Annotations(clean=clean, noisy=noisy, key=key, path=described)


def with_annotations(raw: sources.RawData, annotations: Annotations) -> sources.RawData:
  """`raw` (the CIFAR archive's data) with `annotations` as its given training labels.

  Raises DataCorruptError naming the annotation file and the key when its labels are not one per
  training image of `raw`, or when its clean labels differ from the archive's.
  """
  n, path = len(raw.train_labels), annotations.path
  for key, values in ((CLEAN_KEY, annotations.clean), (annotations.key, annotations.noisy)):
    if len(values) != n:
      raise _corrupt(path, f'{key!r} has {len(values)} labels but the training set of '
                           f'{raw.description} has {n} images')
  differ = np.flatnonzero(annotations.clean != raw.train_labels)
  if differ.size:
    raise _corrupt(path, f'{CLEAN_KEY!r} differs from the training labels of {raw.description} '
                         f'at {differ.size} of {n} images (the first at index {differ[0]}): the '
                         'file belongs to another data set or is not in its training-set order')
  return dataclasses.replace(raw, train_noisy_labels=annotations.noisy,
                             description=f'{raw.description} + {path} ({annotations.key})')


def _from_archive(dataset: str, directory: str, label_set: str, label_file: str,
                  fetch: bool = False, url: str = '') -> sources.RawData:
  """The CIFAR archive in `directory` (with `fetch`: downloaded there from `url` first) and
  its annotations; no download happens when the annotations are not there."""
  path = label_file or find_annotation_file(directory, dataset)
  if path is None:
    raise sources.SourceFailed(
        f'no annotation file ({", ".join(annotation_files(dataset))}) in {directory}')
  annotations = read_annotations(path, dataset, label_set)
  base = BASE_DATASET[dataset]
  if fetch:
    raw = sources.download_cifar(base, directory, url)
  else:
    raw = sources.load_cifar_archive(base, directory)
  return with_annotations(raw, annotations)


def _from_tfds(dataset: str, data_dir: str, label_set: str) -> sources.RawData:
  """A prepared TFDS cifar10_n / cifar100_n copy: its clean 'label' and the label set's key."""
  spec = datasets.DATASET_SPECS[dataset]
  key = TFDS_KEYS[label_set]
  splits = sources.read_tfds(spec.tfds_name, ('train', 'test'), data_dir, extra_keys=(key,))
  train, test = splits['train'], splits['test']
  if train['image'].shape[1:] != spec.image_shape:
    raise sources.SourceFailed(f'images have shape {train["image"].shape[1:]}, expected '
                               f'{spec.image_shape}')
  where = f'tfds:{spec.tfds_name} ({data_dir or "the TFDS default data_dir"})'
  outside = int(np.sum((train[key] < 0) | (train[key] >= spec.num_classes)))
  if outside:
    raise DataCorruptError(f'Damaged TFDS copy {where}: {outside} of its {key!r} training labels '
                           f'are outside [0, {spec.num_classes}); prepare the copy again')
  return sources.RawData(
      train_images=train['image'], train_labels=train['label'], train_noisy_labels=train[key],
      test_images=test['image'], test_labels=test['label'], num_classes=spec.num_classes,
      class_names=spec.class_names, description=f'{where} ({key})',
      train_coarse_labels=train.get('coarse_label'), test_coarse_labels=test.get('coarse_label'))


def how_to_provide(dataset: str) -> str:
  """What to download and where to put it, for the DataNotFoundError of `dataset`."""
  base, spec = BASE_DATASET[dataset], datasets.DATASET_SPECS[dataset]
  archive = cifar_archive.ARCHIVE_LAYOUT[base][0]
  pt_file, _, ordered, csv_file = annotation_files(dataset)
  side_info = 'side_info_cifar10N.csv' if dataset == 'cifar10n' else 'side_info_cifar100N.csv'
  return '\n'.join([
      'How to provide the data:',
      f'  * put the official {archive} (https://www.cs.toronto.edu/~kriz/cifar.html; or its '
      f'extracted folder) and {pt_file} (data/{pt_file} of {REPOSITORY}) in a directory DIR '
      f'and pass --config.data_dir=DIR (annotations elsewhere: --config.noisy_label_file=FILE); '
      'with --config.download=True the archive is fetched into DIR, the annotations never are',
      f'  * or prepare TFDS {spec.tfds_name!r} in array_record format in TFDS_DIR (manual '
      f'download: {side_info}, {IMAGE_ORDER_FILES[dataset]} and {csv_file}, converted from '
      f'{ordered}, all from {REPOSITORY}, in TFDS_DIR/downloads/manual/; preparing needs '
      'TensorFlow once, reading does not) and pass --config.data_dir=TFDS_DIR '
      '--config.data_source=tfds'])


def load_cifar_n(dataset: str, source: str, data_dir: str, label_set: str, label_file: str = '',
                 download: bool = False, url: str = '') -> sources.RawData:
  """Loads CIFAR-10N / CIFAR-100N: the CIFAR images, clean labels and one human label set.

  `dataset` is 'cifar10n' or 'cifar100n', `source` 'auto', 'cifar_archive' or 'tfds', `label_set`
  one of LABEL_SETS[dataset]; `data_dir`, `download` and `url` mean what they mean for CIFAR in
  `sources.load_source`, and `label_file` is `config.noisy_label_file` ('' = search the archive's
  directory). The result is a `RawData` whose train_labels are the clean labels and
  train_noisy_labels the human ones (int32 (50000,) for the full sets). `auto` tries the archive
  with its annotations, then the TFDS copy, then (with `download`) fetching the archive when the
  annotations are there. Raises DataNotFoundError listing what was tried and how to get the
  files (an explicit `label_file` that does not exist: at once), and DataCorruptError naming a
  damaged file (see `read_annotations`, `with_annotations`).
  """
  cifar_dir = data_dir or download_lib.default_data_dir()
  if label_file and not os.path.isfile(label_file):
    raise DataNotFoundError(f'config.noisy_label_file={label_file!r} does not exist.\n'
                            + how_to_provide(dataset))
  named = label_file or f'{annotation_files(dataset)[0]} or another annotation file'
  attempts = []
  if source in ('auto', 'cifar_archive'):
    attempts.append((f'cifar_archive at {cifar_dir} with {named}',
                     lambda: _from_archive(dataset, cifar_dir, label_set, label_file)))
  if source in ('auto', 'tfds'):
    attempts.append((f'tfds at {data_dir or "TFDS default data_dir"}',
                     lambda: _from_tfds(dataset, data_dir, label_set)))
  if source in ('auto', 'cifar_archive'):
    if download:
      fetch_url = download_lib.resolve_url(BASE_DATASET[dataset], url)[0]
      attempts.append((f'download of {fetch_url} into {cifar_dir}, with {named}',
                       lambda: _from_archive(dataset, cifar_dir, label_set, label_file,
                                             fetch=True, url=url)))
    else:
      attempts.append(('download of the CIFAR archive: skipped, downloading is off '
                       '(config.download=False)', None))
  return sources.load_first(dataset, source, data_dir, attempts, how_to_provide(dataset))
