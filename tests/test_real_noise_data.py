"""Real label noise: CIFAR-10N / CIFAR-100N (annotation files and TFDS copies) and CNWL (TFDS).

Every source is built here in its official layout, small: a CIFAR python archive with the CIFAR-N
annotation files beside it (the .pt zip, the .npy dict, the TFDS-order .npy / .csv with their
image-order file), and prepared TFDS copies of cifar10_n, cifar100_n and
controlled_noisy_web_labels written by TFDS's own registered builders (only their example
generation replaced: no download, no TensorFlow). Labels, noise rates and errors are checked
against values made by hand.
"""

import csv
import importlib
import io
import json
import os
import pathlib
import pickle
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from famus_jax import config as base_schema
from famus_jax import config_check
from famus_jax.data import cifar_archive
from famus_jax.data import cifar_n
from famus_jax.data import cnwl
from famus_jax.data import datasets
from famus_jax.data import pipeline
from famus_jax.data import sources
from famus_jax.data import testing
from famus_jax.data import tfds_source
from famus_jax.errors import ConfigError
from famus_jax.errors import DataCorruptError
from famus_jax.errors import DataNotFoundError
from famus_jax.fsr.config import image_shape_of
from famus_jax.train.trainer import train_and_evaluate

tfds = pytest.importorskip('tensorflow_datasets')

# ---- CIFAR-N annotation files in the official formats ------------------------------------------

N_TRAIN = 100  # write_fake_cifar_archive(per_batch=20): 5 batches of 20 training images
FLIPS = {  # label set -> the training positions whose human label is wrong (by hand)
    'aggre': np.arange(10), 'worst': np.arange(40), 'random1': np.arange(0, 100, 5),
    'random2': np.arange(0, 100, 4), 'random3': np.arange(1, 100, 10), 'noisy': np.arange(60, 100)}
RATES = {'aggre': 0.10, 'worst': 0.40, 'random1': 0.20, 'random2': 0.25, 'random3': 0.10,
         'noisy': 0.40}


def human_labels(clean, label_set, num_classes):
  """int64 (N,): `clean` with the positions FLIPS[label_set] moved to the next class."""
  labels = np.asarray(clean, np.int64).copy()
  labels[FLIPS[label_set]] = (labels[FLIPS[label_set]] + 1) % num_classes
  return labels


def annotation_table(dataset, clean, ordered=False):
  """The dict of an official annotation file: clean_label and every label set (int64 arrays)."""
  num_classes = 10 if dataset == 'cifar10n' else 100
  table = {'clean_label': np.asarray(clean, np.int64)}
  for label_set in cifar_n.LABEL_SETS[dataset]:
    key = cifar_n.TFDS_KEYS[label_set] if ordered else cifar_n.FILE_KEYS[label_set][0]
    table[key] = human_labels(clean, label_set, num_classes)
  return table


def write_pt(path, table):
  """The layout torch.save writes (a zip whose <stem>/data.pkl pickles the dict), by hand."""
  stem = pathlib.Path(path).stem
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr(f'{stem}/data.pkl', pickle.dumps(table, protocol=2))
    archive.writestr(f'{stem}/version', '3\n')


def write_annotations(directory, dataset, fmt, table, order=None):
  """Writes `table` as the official file of format `fmt`; returns its path.

  fmt: 'pt' (CIFAR-10_human.pt), 'npy' (CIFAR-10_human.npy), 'ordered_npy' or 'csv' (TFDS
  order: row j is training image order[j]; the image-order file is written beside them).
  """
  names = dict(zip(('pt', 'npy', 'ordered_npy', 'csv'), cifar_n.annotation_files(dataset)))
  path = os.path.join(directory, names[fmt])
  if fmt == 'pt':
    write_pt(path, table)
  elif fmt == 'npy':
    np.save(path, table, allow_pickle=True)
  else:
    np.save(os.path.join(directory, cifar_n.IMAGE_ORDER_FILES[dataset]), order)
    rows = {k: np.asarray(v)[order] for k, v in table.items()}
    if fmt == 'ordered_npy':  # as the repository's: lists of numpy integers
      np.save(path, {k: list(v) for k, v in rows.items()}, allow_pickle=True)
    else:  # as TFDS's instructions write it (pandas to_csv, index=False)
      with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(list(rows))
        writer.writerows(zip(*(v.tolist() for v in rows.values())))
  return path


@pytest.fixture(scope='module')
def archives(tmp_path_factory):
  """{dataset: (directory with the fake CIFAR archive, its arrays)} for cifar10n and cifar100n."""
  out = {}
  for dataset, base in cifar_n.BASE_DATASET.items():
    directory = str(tmp_path_factory.mktemp(base))
    path = testing.write_fake_cifar_archive(directory, base, per_batch=20, seed=3)
    out[dataset] = (directory, cifar_archive.read_cifar(path, base))
  return out


def cifar_n_dir(tmp_path, archives, dataset):
  """A fresh directory holding (a link to) the fake CIFAR archive of `dataset`."""
  directory, arrays = archives[dataset]
  name = os.path.basename(arrays.path)
  os.symlink(os.path.join(directory, name), tmp_path / name)
  return str(tmp_path), arrays


def real_noise_config(dataset, data_dir, **fields):
  """A real-noise config without clean meta images; `fields`: overrides, a__b for a.b."""
  c = base_schema.get_config()
  c.dataset, c.data_dir, c.noise_type, c.num_meta, c.download = dataset, data_dir, 'none', 0, False
  if dataset == 'cifar100n':
    c.noisy_label_set = 'noisy'
  c.update_from_flattened_dict({name.replace('__', '.'): v for name, v in fields.items()})
  return c


CASES = [('cifar10n', s) for s in cifar_n.LABEL_SETS['cifar10n']] + [('cifar100n', 'noisy')]


@pytest.mark.parametrize('fmt', ['pt', 'npy', 'ordered_npy', 'csv'])
@pytest.mark.parametrize('dataset, label_set', CASES)
def test_annotation_files_give_the_label_set(tmp_path, archives, fmt, dataset, label_set):
  directory, arrays = cifar_n_dir(tmp_path, archives, dataset)
  order = np.random.default_rng(5).permutation(N_TRAIN)
  table = annotation_table(dataset, arrays.train_labels, ordered=fmt in ('ordered_npy', 'csv'))
  path = write_annotations(directory, dataset, fmt, table, order)
  splits = pipeline.build_data(real_noise_config(dataset, directory, noisy_label_set=label_set))
  num_classes = 10 if dataset == 'cifar10n' else 100
  expected = human_labels(arrays.train_labels, label_set, num_classes)
  np.testing.assert_array_equal(splits.train_labels, expected)
  np.testing.assert_array_equal(splits.train_clean_labels, arrays.train_labels)
  np.testing.assert_array_equal(splits.train_images, arrays.train_images)
  np.testing.assert_array_equal(splits.test_labels, arrays.test_labels)
  assert splits.is_noisy.sum() == len(FLIPS[label_set]) and splits.is_noisy[FLIPS[label_set]].all()
  assert splits.info['realised_noise_rate'] == pytest.approx(RATES[label_set])
  assert splits.info['noisy_label_set'] == label_set and splits.num_meta == 0
  assert path in splits.info['source'] and splits.info['source'].startswith('cifar_archive:')


def test_noisy_label_file_elsewhere_and_the_search_order(tmp_path, archives):
  directory, arrays = cifar_n_dir(tmp_path, archives, 'cifar10n')
  table = annotation_table('cifar10n', arrays.train_labels)
  other = tmp_path / 'labels'
  other.mkdir()
  wrong = dict(table, worse_label=np.asarray(arrays.train_labels, np.int64))
  write_annotations(directory, 'cifar10n', 'npy', wrong)  # .npy beside the archive: no noise
  path = write_annotations(str(other), 'cifar10n', 'pt', table)
  explicit = pipeline.build_data(real_noise_config('cifar10n', directory, noisy_label_file=path))
  assert explicit.info['realised_noise_rate'] == pytest.approx(0.4)
  found = pipeline.build_data(real_noise_config('cifar10n', directory))
  assert found.info['realised_noise_rate'] == 0.0 and 'CIFAR-10_human.npy' in found.info['source']
  write_annotations(directory, 'cifar10n', 'pt', table)  # .pt comes first in a directory
  assert pipeline.build_data(real_noise_config('cifar10n', directory)).info[
      'realised_noise_rate'] == pytest.approx(0.4)


def test_clean_meta_from_train_takes_clean_labels_of_training_images(tmp_path, archives):
  directory, arrays = cifar_n_dir(tmp_path, archives, 'cifar10n')
  write_annotations(directory, 'cifar10n', 'pt', annotation_table('cifar10n', arrays.train_labels))
  splits = pipeline.build_data(real_noise_config('cifar10n', directory, num_meta=20,
                                                 clean_meta_from_train=True))
  worse = human_labels(arrays.train_labels, 'worst', 10)
  rows = {image.tobytes(): i for i, image in enumerate(arrays.train_images)}
  meta_idx = np.array([rows[image.tobytes()] for image in splits.meta_images])
  train_idx = np.array([rows[image.tobytes()] for image in splits.train_images])
  assert sorted(np.concatenate([meta_idx, train_idx]).tolist()) == list(range(N_TRAIN))
  np.testing.assert_array_equal(splits.meta_labels, arrays.train_labels[meta_idx])
  assert np.bincount(splits.meta_labels, minlength=10).tolist() == [2] * 10
  assert (worse[meta_idx] != splits.meta_labels).any()  # clean, not the human labels
  np.testing.assert_array_equal(splits.train_labels, worse[train_idx])
  assert splits.info['clean_meta_from_train'] and splits.num_train == N_TRAIN - 20


def test_torch_written_annotation_files(tmp_path, archives, monkeypatch):
  torch = pytest.importorskip('torch')
  dirs = {}
  for kind in ('numpy', 'tensors'):
    (tmp_path / kind).mkdir()
    dirs[kind], arrays = cifar_n_dir(tmp_path / kind, archives, 'cifar10n')
  table = annotation_table('cifar10n', arrays.train_labels)
  numpy_path = os.path.join(dirs['numpy'], 'CIFAR-10_human.pt')
  torch.save(table, numpy_path)  # numpy arrays, as the repository's file: read without torch
  with zipfile.ZipFile(numpy_path) as archive:
    assert 'CIFAR-10_human/data.pkl' in archive.namelist()  # the layout write_pt copies
  tensor_path = os.path.join(dirs['tensors'], 'CIFAR-10_human.pt')
  torch.save({k: torch.from_numpy(v) for k, v in table.items()}, tensor_path)  # re-saved
  monkeypatch.setitem(sys.modules, 'torch', None)  # torch not installed
  numpy_file = pipeline.build_data(real_noise_config('cifar10n', dirs['numpy']))
  assert numpy_file.info['realised_noise_rate'] == pytest.approx(0.4)
  with pytest.raises(DataCorruptError, match='install torch') as err:
    pipeline.build_data(real_noise_config('cifar10n', dirs['tensors']))
  assert tensor_path in str(err.value)
  monkeypatch.undo()
  tensors = pipeline.build_data(real_noise_config('cifar10n', dirs['tensors']))
  np.testing.assert_array_equal(tensors.train_labels, numpy_file.train_labels)


def _damage(table, kind):
  t = dict(table)
  if kind == 'short_key':
    t['worse_label'] = t['worse_label'][:-1]
  elif kind == 'short_file':
    t = {k: v[:-1] for k, v in t.items()}
  elif kind == 'missing_key':
    del t['worse_label']
  elif kind == 'missing_clean':
    del t['clean_label']
  elif kind == 'reordered':
    t = {k: v[::-1] for k, v in t.items()}
  elif kind == 'outside':
    t['worse_label'] = t['worse_label'].copy()
    t['worse_label'][7] = 10
  elif kind == 'floats':
    t['worse_label'] = t['worse_label'] + 0.5
  return t


@pytest.mark.parametrize('kind, pattern', [
    ('short_key', "'worse_label' has 99 labels but 'clean_label' 100"),
    ('short_file', "'clean_label' has 99 labels but the training set of .* has 100 images"),
    ('missing_key', "no 'worse_label' entry"),
    ('missing_clean', "no 'clean_label' entry"),
    ('reordered', "'clean_label' differs from the training labels .* not in its training-set"),
    ('outside', r"'worse_label' holds 1 labels outside \[0, 10\) \(the first: 10 at index 7\)"),
    ('floats', "'worse_label' is not a vector of integer labels"),
])
def test_mismatched_annotation_file_names_the_file_and_the_key(tmp_path, archives, kind,
                                                               pattern):
  directory, arrays = cifar_n_dir(tmp_path, archives, 'cifar10n')
  table = _damage(annotation_table('cifar10n', arrays.train_labels), kind)
  path = write_annotations(directory, 'cifar10n', 'pt', table)
  with pytest.raises(DataCorruptError, match=pattern) as err:
    pipeline.build_data(real_noise_config('cifar10n', directory))
  assert path in str(err.value) and cifar_n.REPOSITORY in str(err.value)


class _RunsCode:
  def __reduce__(self):
    return (os.system, ('true',))


@pytest.mark.parametrize('kind, pattern', [
    ('garbage_pt', 'not a zip-format torch file'),
    ('truncated_pt', 'not a zip-format torch file, or truncated'),
    ('code_npy', 'refusing to load it'),
    ('not_a_dict', 'it holds a list, not a dict of label arrays'),
    ('ragged_csv', 'line 3 has 1 fields, the header 6'),
    ('order_not_permutation', 'not a permutation of the 100 annotation rows'),
])
def test_damaged_annotation_file_names_the_file(tmp_path, archives, kind, pattern):
  directory, arrays = cifar_n_dir(tmp_path, archives, 'cifar10n')
  table = annotation_table('cifar10n', arrays.train_labels, ordered=kind.endswith(
      ('csv', 'permutation')))
  order = np.arange(N_TRAIN)
  if kind == 'garbage_pt':
    path = os.path.join(directory, 'CIFAR-10_human.pt')
    pathlib.Path(path).write_bytes(os.urandom(4000))
  elif kind == 'truncated_pt':
    path = write_annotations(directory, 'cifar10n', 'pt', table)
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[:len(data) // 2])
  elif kind == 'code_npy':
    path = write_annotations(directory, 'cifar10n', 'npy', {'clean_label': _RunsCode()})
  elif kind == 'not_a_dict':
    path = os.path.join(directory, 'CIFAR-10_human.pt')
    write_pt(path, [1, 2, 3])
  elif kind == 'ragged_csv':
    path = write_annotations(directory, 'cifar10n', 'csv', table, order)
    lines = pathlib.Path(path).read_text().splitlines()
    lines[2] = '3'
    pathlib.Path(path).write_text('\n'.join(lines) + '\n')
  else:
    path = write_annotations(directory, 'cifar10n', 'ordered_npy', table, order)
    path = os.path.join(directory, 'image_order_c10.npy')
    np.save(path, np.zeros(N_TRAIN, np.int64))
  with pytest.raises(DataCorruptError, match=pattern) as err:
    pipeline.build_data(real_noise_config('cifar10n', directory))
  assert path in str(err.value)


def test_missing_cifar_n_files_say_what_to_put_where(tmp_path, archives):
  directory, arrays = cifar_n_dir(tmp_path, archives, 'cifar10n')
  with pytest.raises(DataNotFoundError) as err:
    pipeline.build_data(real_noise_config('cifar10n', directory))
  message = str(err.value)
  assert type(err.value) is DataNotFoundError
  for needed in (f'cifar_archive at {directory}', 'no annotation file (CIFAR-10_human.pt',
                 f'tfds at {directory}', 'downloading is off', cifar_n.REPOSITORY,
                 'data/CIFAR-10_human.pt', 'cifar10_n', 'TFDS_DIR/downloads/manual/',
                 'image_order_c10.npy', 'CIFAR-10_human_annotations.csv'):
    assert needed in message, needed
  missing = os.path.join(directory, 'nowhere', 'CIFAR-10_human.pt')
  with pytest.raises(DataNotFoundError, match='does not exist') as err:
    pipeline.build_data(real_noise_config('cifar10n', directory, noisy_label_file=missing))
  assert missing in str(err.value)
  table = annotation_table('cifar10n', arrays.train_labels, ordered=True)
  path = write_annotations(directory, 'cifar10n', 'ordered_npy', table, np.arange(N_TRAIN))
  os.remove(os.path.join(directory, 'image_order_c10.npy'))
  with pytest.raises(DataNotFoundError, match='needs .*image_order_c10.npy, which is missing'):
    pipeline.build_data(real_noise_config('cifar10n', directory))
  os.remove(path)
  write_annotations(directory, 'cifar10n', 'pt', annotation_table('cifar10n', arrays.train_labels))
  os.remove(os.path.join(directory, 'cifar-10-python.tar.gz'))  # annotations, no archive
  with pytest.raises(DataNotFoundError, match='no cifar-10-python.tar.gz'):
    pipeline.build_data(real_noise_config('cifar10n', directory, data_source='cifar_archive'))


# ---- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize('dataset, fields, pattern', [
    ('cifar10n', {'noise_type': 'symmetric'}, "noise_type='symmetric' adds synthetic noise"),
    ('cnwl', {'noise_type': 'asymmetric'}, "noise_type='asymmetric' adds synthetic noise"),
    ('cifar10n', {'imbalance_factor': 10.0}, 'imbalance_factor=10.0'),
    ('cifar10n', {'num_meta': 1000}, 'num_meta=1000 .*clean_meta_from_train=True'),
    ('cifar100n', {'noisy_label_set': 'worst'}, r"noisy_label_set='worst' is not one of \['noisy'"),
    ('cifar10n', {'noisy_label_set': 'noisy'}, r"noisy_label_set='noisy' is not one of \['aggre'"),
    ('cifar10n', {'noisy_label_set': 'clean'}, "noisy_label_set='clean' is not one of"),
    ('cifar10n', {'noisy_label_file': 'labels.txt'}, "noisy_label_file='labels.txt' must be"),
    ('cifar10n', {'noisy_label_file': 'a.pt', 'data_source': 'tfds'}, "data_source='tfds' reads"),
    ('cnwl', {'noisy_label_file': 'a.pt'}, 'is for cifar10n / cifar100n'),
    ('cnwl', {'clean_meta_from_train': True}, 'clean_meta_from_train=True needs the clean label'),
    ('cnwl', {'cnwl__color': 'green'}, r"cnwl.color='green' is not one of \['red', 'blue'\]"),
    ('cnwl', {'cnwl__noise_level': 0.25}, r'noise_level=0.25 is not one of .*0.2, 0.3'),
    ('cnwl', {'cnwl__image_size': -1}, 'cnwl.image_size=-1 must be an integer >= 0'),
    ('cnwl', {'data_source': 'cifar_archive'}, "cannot serve dataset='cnwl'"),
])
def test_config_errors_name_the_field(dataset, fields, pattern):
  config = real_noise_config(dataset, '', **fields)
  with pytest.raises(ConfigError, match=pattern):
    config_check.validate(config)
  with pytest.raises(ConfigError, match=pattern):
    pipeline.build_data(config)


@pytest.mark.parametrize('name', ['cifar10n', 'cifar100n', 'cnwl'])
def test_presets_are_the_famus_supplement_setting(name):
  c = importlib.import_module(f'famus_jax.presets.{name}').get_config()
  config_check.validate(c)
  assert c.dataset == name and c.noise_type == 'none' and c.num_meta == 0
  assert (c.model, c.batch_size, c.lr.base, c.num_epochs) == ('preact_resnet18', 64, 0.02, 300)
  assert tuple(c.lr.boundaries_epochs) == (200, 250) and c.meta_set == 'pseudo_clean'
  assert c.method == 'famus'
  if name == 'cnwl':
    assert c.cnwl.image_size == 32 and image_shape_of(c) == (32, 32, 3)


# ---- prepared TFDS copies ----------------------------------------------------------------------

def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def prepare_tfds(data_dir, name, config, splits):
  """Prepares TFDS builder `name` (builder config `config`) in array_record format in
  `data_dir`, with `splits` = {split: [example dict]}: the registered builder, whose features,
  version and file names are the real ones, with only its example generation replaced."""
  registered = tfds.builder_cls(name)

  class Prepared(registered, skip_registration=True):
    name = registered.name

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: list(enumerate(examples)) for split, examples in splits.items()}

  builder = Prepared(data_dir=str(data_dir), config=config, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return pathlib.Path(builder.data_dir)


def _random_images(rng, n, size):
  return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def cifar_n_examples(dataset, images, clean, noisy, train):
  """Records with the features of TFDS cifar10_n / cifar100_n (test records: -1 human labels)."""
  out = []
  for i, (image, label, human) in enumerate(zip(images, clean, noisy)):
    example = {'id': f'{"train" if train else "test"}_{i:05d}', 'image': _png(image),
               'label': int(label)}
    if dataset == 'cifar10n':
      for key in ('worse_label', 'aggre_label', 'random_label1', 'random_label2',
                  'random_label3'):
        example[key] = int(human[key]) if train else -1
      for w in (1, 2, 3):
        example[f'worker{w}_id'], example[f'worker{w}_time'] = (w, 1.5) if train else (-1, -1.0)
    else:
      example.update(coarse_label=0, noise_label=int(human['noise_label']) if train else -1,
                     worker_id=1 if train else -1, worker_time=1.5 if train else -1.0)
    out.append(example)
  return out


@pytest.fixture(scope='module')
def cifar_n_tfds(tmp_path_factory):
  """{dataset: (TFDS data_dir, train images, clean labels, {key: human labels}, test)}."""
  root = tmp_path_factory.mktemp('cifar_n_tfds')
  rng = np.random.default_rng(11)
  out = {}
  for dataset, n_classes in (('cifar10n', 10), ('cifar100n', 100)):
    images, test_images = _random_images(rng, 12, 32), _random_images(rng, 6, 32)
    clean, test_labels = rng.integers(0, n_classes, 12), rng.integers(0, n_classes, 6)
    human = {}  # label set k flips every (k + 2)-th image to the next class
    for k, label_set in enumerate(cifar_n.LABEL_SETS[dataset]):
      flip = np.arange(12) % (k + 2) == 0
      human[cifar_n.TFDS_KEYS[label_set]] = np.where(flip, (clean + 1) % n_classes, clean)
    rows = [{k: v[i] for k, v in human.items()} for i in range(12)]
    prepare_tfds(root, datasets_name(dataset), None, {
        'train': cifar_n_examples(dataset, images, clean, rows, True),
        'test': cifar_n_examples(dataset, test_images, test_labels, [{}] * 6, False)})
    out[dataset] = (str(root), images, clean, human, (test_images, test_labels))
  return out


def datasets_name(dataset):
  return datasets.DATASET_SPECS[dataset].tfds_name


def _sorted_examples(images, *labels):
  return sorted(zip((im.tobytes() for im in images), *(np.asarray(l).tolist() for l in labels)))


@pytest.mark.parametrize('source', ['tfds', 'auto'])
@pytest.mark.parametrize('dataset, label_set', [('cifar10n', 'worst'), ('cifar10n', 'random2'),
                                                ('cifar100n', 'noisy')])
def test_prepared_tfds_cifar_n_copy(cifar_n_tfds, source, dataset, label_set):
  root, images, clean, human, (test_images, test_labels) = cifar_n_tfds[dataset]
  splits = pipeline.build_data(real_noise_config(dataset, root, noisy_label_set=label_set,
                                                 data_source=source))
  noisy = human[cifar_n.TFDS_KEYS[label_set]]
  assert _sorted_examples(splits.train_images, splits.train_clean_labels, splits.train_labels) == (
      _sorted_examples(images, clean, noisy))
  assert _sorted_examples(splits.test_images, splits.test_labels) == (
      _sorted_examples(test_images, test_labels))
  assert splits.info['realised_noise_rate'] == pytest.approx(np.mean(noisy != clean))
  assert splits.info['source'] == (f'tfds:{datasets_name(dataset)} ({root}) '
                                   f'({cifar_n.TFDS_KEYS[label_set]})')


def test_tfds_records_without_the_label_set_key(cifar_n_tfds):
  root = cifar_n_tfds['cifar10n'][0]
  with pytest.raises(DataCorruptError, match=r"cifar10_n-train\.array_record.* lack 'noise_la"):
    sources.read_tfds('cifar10_n', ('train',), root, extra_keys=('noise_label',))

  class Records:
    def __len__(self):
      return 2

    def __getitem__(self, i):
      return {'image': np.zeros((2, 2, 3), np.uint8), 'label': i}

  with pytest.raises(sources.SourceFailed, match="its records lack 'worse_label'"):
    tfds_source.read_split(Records(), extra_keys=('worse_label',))


# ---- CNWL ---------------------------------------------------------------------------------------

RAMP = np.broadcast_to((40 + 2 * np.arange(84))[None, :, None], (84, 84, 3)).astype(np.uint8)


def cnwl_examples(labels, is_clean, images):
  return [{'image': _png(image), 'label': int(label), 'is_clean': bool(flag), 'id': f'im{i}'}
          for i, (label, flag, image) in enumerate(zip(labels, is_clean, images))]


@pytest.fixture(scope='module')
def cnwl_tfds(tmp_path_factory):
  """A prepared CNWL copy: red (train_40, train_20, validation) and blue (train_40, validation).

  Returns (data_dir, {(color, split): (labels, is_clean, images)}).
  """
  root = tmp_path_factory.mktemp('cnwl_tfds')
  rng = np.random.default_rng(12)
  content = {}
  for color, train_splits in (('red', ('train_40', 'train_20')), ('blue', ('train_40',))):
    splits = {}
    for split in train_splits + ('validation',):
      n = 6 if split == 'validation' else 10
      labels = rng.integers(0, 100, n)
      is_clean = np.ones(n, bool) if split == 'validation' else rng.random(n) < 0.6
      images = _random_images(rng, n, 84)
      images[0] = RAMP
      content[(color, split)] = (labels, is_clean, images)
      splits[split] = cnwl_examples(labels, is_clean, images)
    prepare_tfds(root, 'controlled_noisy_web_labels', f'mini_imagenet_{color}', splits)
  return str(root), content


@pytest.mark.parametrize('color, level, split', [('red', 0.4, 'train_40'), ('red', 0.2, 'train_20'),
                                                 ('blue', 0.4, 'train_40')])
def test_cnwl_labels_clean_flags_and_noise_rate(cnwl_tfds, color, level, split):
  root, content = cnwl_tfds
  labels, is_clean, images = content[(color, split)]
  splits = pipeline.build_data(real_noise_config('cnwl', root, cnwl__color=color,
                                                 cnwl__noise_level=level))
  clean = np.where(is_clean, labels, -1)
  assert _sorted_examples(splits.train_images, splits.train_labels, splits.train_clean_labels) == (
      _sorted_examples(images, labels, clean))
  assert splits.is_noisy.sum() == (~is_clean).sum()
  np.testing.assert_array_equal(splits.is_noisy, splits.train_clean_labels == cnwl.UNKNOWN)
  assert splits.info['realised_noise_rate'] == pytest.approx(1 - is_clean.mean())
  assert splits.info['cnwl_color'] == color and splits.info['cnwl_noise_level'] == level
  test_labels, _, test_images = content[(color, 'validation')]
  assert _sorted_examples(splits.test_images, splits.test_labels) == (
      _sorted_examples(test_images, test_labels))
  assert sum(splits.info['class_counts']) == is_clean.sum()  # the known clean labels
  assert split in splits.info['source'] and f'mini_imagenet_{color}' in splits.info['source']


def test_cnwl_downsampled_to_32(cnwl_tfds):
  root, content = cnwl_tfds
  splits = pipeline.build_data(real_noise_config('cnwl', root, cnwl__image_size=32))
  assert splits.train_images.shape == (10, 32, 32, 3) and splits.test_images.shape == (6, 32, 32, 3)
  # A linear ramp stays the ramp sampled at the output pixel centres (away from the borders).
  centres = (np.arange(32) + 0.5) * 84 / 32 - 0.5
  ramps = [im for im in list(splits.train_images) + list(splits.test_images)
           if np.ptp(im[:, :, 0], axis=0).max() == 0 and im[0, 0, 0] < 60]
  assert len(ramps) == 2  # image 0 of red's train_40 and of its validation split
  for image in ramps:
    np.testing.assert_allclose(image[16, 2:30, 1], 40 + 2 * centres[2:30], atol=1.0)
  flat = np.full((5, 84, 84, 3), 77, np.uint8)
  assert (cnwl.resize_images(flat, 32) == 77).all()


def test_cnwl_missing_copy_says_which_files_to_put_where(tmp_path, cnwl_tfds):
  with pytest.raises(DataNotFoundError) as err:
    pipeline.build_data(real_noise_config('cnwl', str(tmp_path), cnwl__color='blue'))
  message = str(err.value)
  for needed in ('controlled_noisy_web_labels/mini_imagenet_blue split train_40',
                 'TFDS_DIR/downloads/manual/', cnwl.ANNOTATIONS_URL, 'noisy_images/',
                 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
                 'tfds build controlled_noisy_web_labels --config=mini_imagenet_blue'):
    assert needed in message, needed
  root = tmp_path / 'copy'
  version = pathlib.Path(cnwl_tfds[0]) / 'controlled_noisy_web_labels' / 'mini_imagenet_red'
  target = root / 'controlled_noisy_web_labels' / 'mini_imagenet_red'
  target.mkdir(parents=True)
  os.symlink(version / '1.0.0', target / '1.0.0', target_is_directory=True)
  assert pipeline.build_data(real_noise_config('cnwl', str(root))).num_train == 10
  target.joinpath('1.0.0').unlink()
  (target / '1.0.0').mkdir()
  for f in (version / '1.0.0').iterdir():
    data = f.read_bytes()
    (target / '1.0.0' / f.name).write_bytes(data[:-1000] if 'train_40' in f.name else data)
  with pytest.raises(DataCorruptError, match='train_40.array_record.*truncated'):
    pipeline.build_data(real_noise_config('cnwl', str(root)))


# ---- a run ---------------------------------------------------------------------------------------

def test_two_training_steps_on_cifar10n_write_the_realised_noise_rate(tmp_path, archives):
  directory, arrays = cifar_n_dir(tmp_path, archives, 'cifar10n')
  write_annotations(directory, 'cifar10n', 'pt', annotation_table('cifar10n', arrays.train_labels))
  c = real_noise_config('cifar10n', directory, method='erm', model='small_cnn', width=4,
                        batch_size=10, eval_batch_size=20, num_epochs=0, num_steps=2,
                        log_every=1, eval_every=2, checkpoint_every=2, progress_bar=False)
  workdir = tmp_path / 'run'
  summary = train_and_evaluate(c, str(workdir))
  info = json.loads((workdir / 'data_info.json').read_text())
  assert info['realised_noise_rate'] == pytest.approx(0.4) and info['noisy_label_set'] == 'worst'
  assert summary['steps'] == 2 and summary['realised_noise_rate'] == pytest.approx(0.4)
