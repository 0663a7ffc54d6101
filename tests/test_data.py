"""Tests for famus_jax.data: sources, corruptions, meta split, batches, augment."""

import functools
import os
import pickle
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from famus_jax import config as base_schema
from famus_jax import data
from famus_jax.data import batches
from famus_jax.data import cifar_archive
from famus_jax.data import corruptions
from famus_jax.data import datasets
from famus_jax.data import idx
from famus_jax.data import meta_split
from famus_jax.data import sources
from famus_jax.data import testing
from famus_jax.data import tfds_source
from famus_jax.errors import ConfigError
from famus_jax.errors import DataNotFoundError


def small_config(**overrides):
  """configs/base.py with the synthetic data set, small enough for tests."""
  c = base_schema.get_config()
  c.dataset = 'synthetic'
  c.data_source = 'auto'
  c.num_meta = 50
  c.synthetic.num_train = 500
  c.synthetic.num_test = 100
  c.synthetic.image_size = 8
  c.synthetic.channels = 3
  c.synthetic.num_classes = 10
  c.download = False  # tests never reach the network
  c.update(overrides)
  return c


def balanced_labels(per_class, num_classes, seed=0):
  rng = np.random.default_rng(seed)
  return rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(
      np.int32)


def test_package_exports():
  for name in ('DataSplits', 'build_data', 'augment_batch', 'DATASETS',
               'DataNotFoundError', 'ConfigError'):
    assert hasattr(data, name), name
  assert data.ConfigError is ConfigError and issubclass(ConfigError, ValueError)
  assert issubclass(DataNotFoundError, FileNotFoundError)
  assert data.DATASETS[:4] == ('cifar10', 'cifar100', 'fashion_mnist', 'synthetic')
  assert set(datasets.REAL_NOISE_DATASETS) <= set(data.DATASETS)  # tests/test_real_noise_data.py


# ---------------------------------------------------------------------------
# Label noise.


def test_symmetric_noise_rate_follows_unif_convention():
  labels = balanced_labels(5000, 10)
  noisy = corruptions.symmetric_noise(labels, 0.4, 10,
                                      np.random.default_rng(0))
  assert noisy.dtype == np.int32 and noisy.shape == labels.shape
  # Uniform over all classes, true one included: 0.4 * 9 / 10 = 0.36.
  assert abs(corruptions.realised_noise_rate(noisy, labels) - 0.36) < 0.01
  # Wrong labels are spread over the other classes.
  wrong = noisy[noisy != labels]
  assert set(np.unique(wrong)) == set(range(10))


def test_symmetric_noise_deterministic_per_seed():
  labels = balanced_labels(1000, 10)
  a = corruptions.symmetric_noise(labels, 0.5, 10, np.random.default_rng(3))
  b = corruptions.symmetric_noise(labels, 0.5, 10, np.random.default_rng(3))
  c = corruptions.symmetric_noise(labels, 0.5, 10, np.random.default_rng(4))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  same = corruptions.symmetric_noise(labels, 0.0, 10, np.random.default_rng(3))
  np.testing.assert_array_equal(same, labels)


def test_cifar10_asymmetric_map():
  pair_map = corruptions.asymmetric_pair_map('cifar10', 10)
  # truck->automobile, bird->airplane, deer->horse, cat<->dog.
  np.testing.assert_array_equal(pair_map, [0, 1, 0, 5, 7, 3, 6, 7, 8, 1])


def test_fashion_mnist_and_synthetic_asymmetric_maps():
  np.testing.assert_array_equal(
      corruptions.asymmetric_pair_map('fashion_mnist', 10),
      [6, 1, 4, 3, 2, 7, 0, 9, 8, 5])
  np.testing.assert_array_equal(
      corruptions.asymmetric_pair_map('synthetic', 7), [1, 2, 3, 4, 5, 6, 0])


def test_cifar100_superclass_table_is_a_partition():
  table = datasets.CIFAR100_FINE_TO_COARSE
  assert table.shape == (100,)
  np.testing.assert_array_equal(np.bincount(table, minlength=20), [5] * 20)
  names = datasets.CIFAR100_CLASSES
  coarse = datasets.CIFAR100_COARSE_CLASSES
  assert len(names) == 100 and len(coarse) == 20
  assert coarse[table[names.index('whale')]] == 'aquatic_mammals'
  assert coarse[table[names.index('tractor')]] == 'vehicles_2'
  assert coarse[table[names.index('maple_tree')]] == 'trees'


def test_cifar100_asymmetric_map_next_within_superclass():
  table = datasets.CIFAR100_FINE_TO_COARSE
  pair_map = corruptions.asymmetric_pair_map('cifar100', 100)
  assert sorted(pair_map.tolist()) == list(range(100))  # A permutation.
  assert (pair_map != np.arange(100)).all()
  np.testing.assert_array_equal(table[pair_map], table)  # Same super-class.
  # Aquatic mammals 4 beaver, 30 dolphin, 55 otter, 72 seal, 95 whale.
  assert [pair_map[c] for c in (4, 30, 55, 72, 95)] == [30, 55, 72, 95, 4]
  # Each super-class is one 5-cycle.
  for c in range(100):
    orbit, x = [c], pair_map[c]
    while x != c:
      orbit.append(x)
      x = pair_map[x]
    assert len(orbit) == 5


def test_fine_to_coarse_from_labels():
  fine = np.arange(100).repeat(3)
  table = corruptions.fine_to_coarse_from_labels(
      fine, datasets.CIFAR100_FINE_TO_COARSE[fine], 100)
  np.testing.assert_array_equal(table, datasets.CIFAR100_FINE_TO_COARSE)
  random_coarse = np.random.default_rng(0).integers(0, 20, len(fine))
  assert corruptions.fine_to_coarse_from_labels(fine, random_coarse,
                                                100) is None


def test_asymmetric_noise_flips_only_to_pairs():
  labels = balanced_labels(2000, 10)
  pair_map = corruptions.asymmetric_pair_map('cifar10', 10)
  noisy = corruptions.asymmetric_noise(labels, 0.4, pair_map,
                                       np.random.default_rng(0))
  changed = noisy != labels
  np.testing.assert_array_equal(noisy[changed], pair_map[labels[changed]])
  mapped = pair_map[labels] != labels  # classes 2, 3, 4, 5, 9.
  assert not changed[~mapped].any()
  assert abs(changed[mapped].mean() - 0.4) < 0.02
  all_flipped = corruptions.asymmetric_noise(labels, 1.0, pair_map,
                                             np.random.default_rng(0))
  np.testing.assert_array_equal(all_flipped, pair_map[labels])


# ---------------------------------------------------------------------------
# Long tail and meta split.


def test_long_tail_counts_exact():
  labels = balanced_labels(5000, 10)
  keep = corruptions.long_tail_indices(labels, 100.0, 10,
                                       np.random.default_rng(0))
  counts = np.bincount(labels[keep], minlength=10)
  # floor(5000 * 0.01 ** (c / 9)): the usual CIFAR-10-LT (factor 100) counts.
  expected = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
  np.testing.assert_array_equal(counts, expected)
  assert len(np.unique(keep)) == len(keep) and (np.diff(keep) > 0).all()
  for c, n_c in enumerate(expected):
    assert n_c == int(np.floor(5000 * 0.01 ** (c / 9) + 1e-6))
  again = corruptions.long_tail_indices(labels, 100.0, 10,
                                        np.random.default_rng(0))
  np.testing.assert_array_equal(keep, again)


def test_long_tail_factor_one_keeps_all():
  labels = balanced_labels(30, 10)
  keep = corruptions.long_tail_indices(labels, 1.0, 10,
                                       np.random.default_rng(0))
  np.testing.assert_array_equal(keep, np.arange(300))


def test_meta_split_class_balanced_and_disjoint():
  labels = balanced_labels(20, 10)
  meta_idx, rest_idx = meta_split.class_balanced_split(
      labels, 50, 10, np.random.default_rng(0))
  np.testing.assert_array_equal(np.bincount(labels[meta_idx], minlength=10),
                                [5] * 10)
  assert len(np.intersect1d(meta_idx, rest_idx)) == 0
  np.testing.assert_array_equal(
      np.sort(np.concatenate([meta_idx, rest_idx])), np.arange(200))
  empty, everything = meta_split.class_balanced_split(
      labels, 0, 10, np.random.default_rng(0))
  assert empty.shape == (0,) and len(everything) == 200


def test_meta_split_errors_name_num_meta():
  labels = balanced_labels(20, 10)
  labels[labels == 7] = 6  # Class 7 now has no examples.
  labels[:3] = 7  # ... and then 3.
  with pytest.raises(ConfigError, match=r'num_meta=50.*class 7 has only 3'):
    meta_split.class_balanced_split(labels, 50, 10, np.random.default_rng(0))
  with pytest.raises(ConfigError, match='num_meta=55.*multiple'):
    meta_split.class_balanced_split(labels, 55, 10, np.random.default_rng(0))
  # 20 per class, 20 meta per class would leave none for training.
  with pytest.raises(ConfigError, match='num_meta'):
    meta_split.class_balanced_split(balanced_labels(20, 10), 200, 10,
                                    np.random.default_rng(0))


# ---------------------------------------------------------------------------
# build_data on the synthetic source.


def test_build_data_synthetic_splits():
  config = small_config(noise_type='symmetric', noise_rate=0.6)
  splits = data.build_data(config)
  assert splits.train_images.shape == (450, 8, 8, 3)
  assert splits.train_images.dtype == np.uint8
  assert splits.meta_images.shape == (50, 8, 8, 3)
  assert splits.test_images.shape == (100, 8, 8, 3)
  for labels in (splits.train_labels, splits.train_clean_labels,
                 splits.meta_labels, splits.test_labels):
    assert labels.dtype == np.int32
  assert splits.mean.shape == (3,) and splits.mean.dtype == np.float32
  assert splits.std.shape == (3,) and splits.std.dtype == np.float32
  flat = splits.train_images.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(splits.mean, flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(splits.std, flat.std(0), rtol=1e-4)
  np.testing.assert_array_equal(np.bincount(splits.meta_labels), [5] * 10)
  info = splits.info
  assert info['num_train'] == 450 and info['num_meta'] == 50
  assert info['num_test'] == 100 and info['dataset'] == 'synthetic'
  assert info['class_counts'] == [45] * 10
  np.testing.assert_array_equal(
      splits.is_noisy, splits.train_labels != splits.train_clean_labels)
  assert info['realised_noise_rate'] == pytest.approx(splits.is_noisy.mean())
  assert 0.4 < info['realised_noise_rate'] < 0.68  # expected 0.54

  # Meta and training labels are the source's clean labels; sets disjoint.
  raw = sources.load_source('synthetic', 'synthetic', '', config.synthetic,
                            seed=config.seed)
  label_of = {im.tobytes(): l for im, l in zip(raw.train_images,
                                               raw.train_labels)}
  assert len(label_of) == 500
  meta_keys = [im.tobytes() for im in splits.meta_images]
  train_keys = [im.tobytes() for im in splits.train_images]
  assert [label_of[k] for k in meta_keys] == splits.meta_labels.tolist()
  assert ([label_of[k] for k in train_keys]
          == splits.train_clean_labels.tolist())
  assert not set(meta_keys) & set(train_keys)


def test_build_data_deterministic_and_streams_independent():
  a = data.build_data(small_config())
  b = data.build_data(small_config())
  np.testing.assert_array_equal(a.train_labels, b.train_labels)
  np.testing.assert_array_equal(a.meta_images, b.meta_images)
  # Changing the noise does not move the meta set.
  c = data.build_data(small_config(noise_type='asymmetric', noise_rate=0.3))
  np.testing.assert_array_equal(a.meta_images, c.meta_images)
  np.testing.assert_array_equal(a.train_clean_labels, c.train_clean_labels)
  changed = c.train_labels != c.train_clean_labels
  np.testing.assert_array_equal(c.train_labels[changed],
                                (c.train_clean_labels[changed] + 1) % 10)
  d = data.build_data(small_config(seed=1))
  assert not np.array_equal(a.train_images, d.train_images)


def test_build_data_long_tail_and_noise_together():
  config = small_config(imbalance_factor=10.0, num_meta=20,
                        noise_type='symmetric', noise_rate=0.2)
  config.synthetic.num_train = 1000
  splits = data.build_data(config)
  expected = corruptions.long_tail_counts(100, 10.0, 10)
  assert expected[0] == 100 and expected[-1] == 10
  np.testing.assert_array_equal(splits.info['class_counts'],
                                np.array(expected) - 2)
  np.testing.assert_array_equal(np.bincount(splits.meta_labels), [2] * 10)


def test_train_subset_is_class_balanced_and_leaves_meta_alone():
  full = data.build_data(small_config())
  sub = data.build_data(small_config(train_subset=200))
  assert sub.info['num_train'] == 200 and sub.info['class_counts'] == [20] * 10
  np.testing.assert_array_equal(sub.meta_images, full.meta_images)
  full_keys = {im.tobytes() for im in full.train_images}
  assert {im.tobytes() for im in sub.train_images} <= full_keys
  with pytest.raises(ConfigError, match=r'train_subset=205.*multiple'):
    data.build_data(small_config(train_subset=205))
  with pytest.raises(ConfigError, match=r'train_subset=460.*class'):
    data.build_data(small_config(train_subset=460))


def test_noise_none_leaves_labels_clean():
  splits = data.build_data(small_config(noise_type='none'))
  assert not splits.is_noisy.any()
  assert splits.info['realised_noise_rate'] == 0.0


# ---------------------------------------------------------------------------
# Config errors and missing data.


@pytest.mark.parametrize('field,value,pattern', [
    ('dataset', 'mnist', r"dataset='mnist'.*cifar10, cifar100, fashion_mnist"),
    ('data_source', 'web', r"data_source='web'.*tfds, idx, cifar_archive"),
    ('noise_type', 'pair', r"noise_type='pair'.*none, symmetric, asymmetric"),
    ('noise_rate', 1.0, 'noise_rate=1.0'),
    ('noise_rate', -0.1, 'noise_rate'),
    ('imbalance_factor', 0.5, 'imbalance_factor'),
    ('num_meta', 55, 'num_meta=55'),
    ('train_subset', -10, 'train_subset=-10'),
])
def test_config_errors(field, value, pattern):
  with pytest.raises(ConfigError, match=pattern):
    data.build_data(small_config(**{field: value}))


def test_source_that_cannot_serve_dataset():
  with pytest.raises(ConfigError, match='idx.*cifar10'):
    data.build_data(small_config(dataset='cifar10', data_source='idx'))


def test_missing_cifar_data_message(tmp_path):
  config = small_config(dataset='cifar10', data_dir=str(tmp_path))
  with pytest.raises(DataNotFoundError) as excinfo:
    data.build_data(config)
  message = str(excinfo.value)
  assert str(tmp_path) in message
  assert 'cifar-10-python.tar.gz' in message
  assert '--config.data_dir=' in message
  assert '--config.data_source=cifar_archive' in message
  assert 'tfds' in message
  assert isinstance(excinfo.value, FileNotFoundError)


def test_missing_idx_data_message(tmp_path):
  config = small_config(dataset='fashion_mnist', data_source='idx',
                        data_dir=str(tmp_path))
  with pytest.raises(DataNotFoundError,
                     match=r'(?s)idx at .*--config\.data_source=idx'):
    data.build_data(config)


# ---------------------------------------------------------------------------
# IDX files.


@pytest.mark.parametrize('compress', [True, False])
def test_idx_round_trip(tmp_path, compress):
  testing.write_fake_idx_dir(str(tmp_path), num_train=30, num_test=10,
                             compress=compress)
  images, labels = idx.read_idx_split(str(tmp_path), 'train')
  assert images.shape == (30, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (30,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), [3] * 10)
  raw = sources.load_source('fashion_mnist', 'idx', str(tmp_path), None)
  assert raw.test_images.shape == (10, 28, 28, 1)
  np.testing.assert_array_equal(raw.train_images, images)
  assert raw.class_names[0] == 'T-shirt/top'


def test_idx_values_and_magic(tmp_path):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = str(tmp_path / 'x-idx3-ubyte.gz')
  idx.write_idx(path, array)
  np.testing.assert_array_equal(idx.read_idx_file(path, idx.IMAGES_MAGIC),
                                array)
  with pytest.raises(ValueError, match='magic number 0x00000803'):
    idx.read_idx_file(path, idx.LABELS_MAGIC)
  header = bytes([0, 0, 8, 1]) + (5).to_bytes(4, 'big')
  with pytest.raises(ValueError, match='header says'):
    idx.parse_idx(header + b'\x01\x02', idx.LABELS_MAGIC)


def test_real_fashion_mnist():
  raw = sources.load_source('fashion_mnist', 'idx', '', None)
  assert raw.train_images.shape == (60000, 28, 28, 1)
  assert raw.test_images.shape == (10000, 28, 28, 1)
  assert raw.train_images.dtype == np.uint8
  assert raw.num_classes == 10 and len(raw.class_names) == 10
  np.testing.assert_array_equal(np.bincount(raw.train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(raw.test_labels), [1000] * 10)
  assert raw.description == f'idx:{datasets.DEBIAN_FASHION_MNIST_DIR}'
  assert 50 < raw.train_images.mean() < 100  # Mostly dark background.


# ---------------------------------------------------------------------------
# CIFAR archives.


def _pickles_in(path):
  with tarfile.open(path) as tar:
    return {os.path.basename(m.name): pickle.load(tar.extractfile(m),
                                                  encoding='bytes')
            for m in tar if m.isfile()}


def test_cifar10_archive(tmp_path):
  path = testing.write_fake_cifar_archive(str(tmp_path), 'cifar10',
                                          per_batch=20, seed=1)
  assert os.path.basename(path) == 'cifar-10-python.tar.gz'
  raw = sources.load_source('cifar10', 'cifar_archive', str(tmp_path), None)
  assert raw.train_images.shape == (100, 32, 32, 3)
  assert raw.test_images.shape == (20, 32, 32, 3)
  assert raw.train_images.dtype == np.uint8
  assert raw.train_labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(raw.train_labels), [10] * 10)
  assert raw.class_names[9] == 'truck'
  assert raw.train_coarse_labels is None
  # Layout: row = 1024 red, 1024 green, 1024 blue, each row-major.
  files = _pickles_in(path)
  batch2 = files['data_batch_2']
  row = batch2[b'data'][3]
  image = raw.train_images[20 + 3]
  for (h, w, c) in [(0, 0, 0), (5, 17, 1), (31, 2, 2), (13, 31, 0)]:
    assert image[h, w, c] == row[c * 1024 + h * 32 + w]
  assert raw.train_labels[23] == batch2[b'labels'][3]
  np.testing.assert_array_equal(raw.test_labels, files['test_batch'][b'labels'])
  # data_dir may also name the archive itself.
  direct = sources.load_source('cifar10', 'cifar_archive', path, None)
  np.testing.assert_array_equal(direct.train_images, raw.train_images)


def test_cifar100_archive_and_extracted_folder(tmp_path):
  testing.write_fake_cifar_archive(str(tmp_path), 'cifar100', per_batch=40,
                                   extracted=True)
  from_tar = sources.load_source('cifar100', 'cifar_archive', str(tmp_path),
                                 None)
  assert from_tar.train_images.shape == (200, 32, 32, 3)
  assert from_tar.test_images.shape == (40, 32, 32, 3)
  assert from_tar.num_classes == 100
  assert from_tar.class_names[:2] == ('apple', 'aquarium_fish')
  np.testing.assert_array_equal(
      from_tar.train_coarse_labels,
      datasets.CIFAR100_FINE_TO_COARSE[from_tar.train_labels])
  assert from_tar.test_coarse_labels.shape == (40,)
  folder = tmp_path / 'cifar-100-python'
  from_folder = sources.load_source('cifar100', 'cifar_archive', str(folder),
                                    None)
  np.testing.assert_array_equal(from_tar.train_images,
                                from_folder.train_images)
  np.testing.assert_array_equal(from_tar.test_labels, from_folder.test_labels)


def test_cifar_build_data_auto_prefers_archive(tmp_path):
  testing.write_fake_cifar_archive(str(tmp_path), 'cifar100', per_batch=400)
  config = small_config(dataset='cifar100', data_dir=str(tmp_path),
                        num_meta=100, noise_type='asymmetric', noise_rate=0.5)
  splits = data.build_data(config)
  assert splits.info['source'].startswith('cifar_archive:')
  assert splits.info['pair_map_source'] == 'source coarse labels'
  assert splits.num_train == 1900 and splits.num_meta == 100
  table = datasets.CIFAR100_FINE_TO_COARSE
  np.testing.assert_array_equal(table[splits.train_labels],
                                table[splits.train_clean_labels])
  assert 0.4 < splits.info['realised_noise_rate'] < 0.6


def test_archive_unpickler_refuses_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ('true',))
  payload = pickle.dumps({b'data': Evil()})
  folder = tmp_path / 'cifar-10-batches-py'
  folder.mkdir()
  for name in cifar_archive.ARCHIVE_LAYOUT['cifar10'][2] + ('test_batch',):
    (folder / name).write_bytes(payload)
  with pytest.raises(DataNotFoundError, match='refusing'):
    sources.load_source('cifar10', 'cifar_archive', str(tmp_path), None)


# ---------------------------------------------------------------------------
# TFDS (mocked: no TFDS data can be prepared here).


def test_tfds_source_under_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    raw = sources.load_source('cifar10', 'tfds', '', None)
  assert raw.train_images.shape == (12, 32, 32, 3)
  assert raw.test_images.shape == (12, 32, 32, 3)
  assert raw.train_images.dtype == np.uint8
  assert raw.train_labels.dtype == np.int32
  assert ((0 <= raw.train_labels) & (raw.train_labels < 10)).all()
  assert raw.class_names == datasets.CIFAR10_CLASSES
  assert raw.description.startswith('tfds:cifar10')


class _FakeRandomAccessSource:
  """Stands in for an array_record tfds data source (batched reads)."""

  def __init__(self, n):
    self.n, self.batched_calls = n, 0

  def __len__(self):
    return self.n

  def _record(self, i):
    return {'image': np.full((32, 32, 3), i % 256, np.uint8),
            'label': np.int64(i % 100), 'coarse_label': np.int64(i % 20),
            'id': f'train_{i}'}

  def __getitem__(self, i):
    return self._record(i)

  def __getitems__(self, ids):
    self.batched_calls += 1
    return [self._record(i) for i in ids]


def test_tfds_reader_uses_batched_reads(monkeypatch):
  monkeypatch.setattr(tfds_source, 'CHUNK', 64)
  fake = _FakeRandomAccessSource(300)
  arrays = tfds_source.read_split(fake)
  assert fake.batched_calls == 5  # ceil(300 / 64)
  assert arrays['image'].shape == (300, 32, 32, 3)
  assert arrays['image'].dtype == np.uint8
  np.testing.assert_array_equal(arrays['image'][:, 0, 0, 0],
                                np.arange(300) % 256)
  np.testing.assert_array_equal(arrays['label'], np.arange(300) % 100)
  np.testing.assert_array_equal(arrays['coarse_label'], np.arange(300) % 20)
  assert arrays['label'].dtype == np.int32


def test_tfds_cifar100_build_data_under_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  config = small_config(dataset='cifar100', num_meta=0,
                        noise_type='asymmetric', noise_rate=0.5)
  with tfds.testing.mock_data(num_examples=30):
    splits = data.build_data(config)
  assert splits.train_images.shape == (30, 32, 32, 3)
  assert splits.num_classes == 100
  # Mock coarse labels are random, so the standard table is used.
  assert splits.info['pair_map_source'] == (
      'standard CIFAR-100 super-class table')


# ---------------------------------------------------------------------------
# Augmentation.


def _images(b=16, h=8, w=8, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (b, h, w, c),
                                              dtype=np.uint8)


MEAN = np.array([0.5, 0.4, 0.3], np.float32)
STD = np.array([0.25, 0.2, 0.3], np.float32)


def _normalise(images):
  return (images.astype(np.float32) / 255 - MEAN) / STD


def test_augment_eval_and_identity_settings_only_normalise():
  images = _images()
  rng = jax.random.key(0)
  for kwargs in (dict(crop_padding=4, flip=True, train=False),
                 dict(crop_padding=0, flip=False, train=True)):
    out = data.augment_batch(images, rng, mean=MEAN, std=STD, **kwargs)
    assert out.shape == images.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _normalise(images), rtol=1e-5, atol=1e-5)


def test_augment_deterministic_and_jittable():
  images = _images()
  fn = functools.partial(data.augment_batch, crop_padding=2, flip=True,
                         mean=MEAN, std=STD, train=True)
  a = fn(images, jax.random.key(1))
  b = jax.jit(fn)(images, jax.random.key(1))
  c = fn(images, jax.random.key(2))
  assert a.shape == (16, 8, 8, 3) and a.dtype == jnp.float32
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  assert not np.allclose(a, c)


def test_augment_flip_flips_some():
  images = _images(b=64)
  out = np.asarray(data.augment_batch(images, jax.random.key(0),
                                      crop_padding=0, flip=True, mean=MEAN,
                                      std=STD, train=True))
  plain = _normalise(images)
  mirrored = plain[:, :, ::-1]
  is_plain = np.isclose(out, plain, atol=1e-5).all(axis=(1, 2, 3))
  is_mirrored = np.isclose(out, mirrored, atol=1e-5).all(axis=(1, 2, 3))
  assert (is_plain | is_mirrored).all()
  assert 10 < is_mirrored.sum() < 54


def test_augment_crop_is_a_shifted_window_with_zero_padding():
  images = _images(b=64)
  pad = 2
  out = np.asarray(data.augment_batch(images, jax.random.key(5),
                                      crop_padding=pad, flip=False,
                                      mean=np.zeros(3), std=np.ones(3),
                                      train=True))
  padded = np.pad(images.astype(np.float32) / 255,
                  ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = []
  for i in range(len(images)):
    windows = [(dy, dx) for dy in range(2 * pad + 1)
               for dx in range(2 * pad + 1)
               if np.allclose(out[i], padded[i, dy:dy + 8, dx:dx + 8],
                              atol=1e-6)]
    assert windows, f'example {i} is not a window of the padded image'
    offsets.append(windows[0])
  # Every offset in [0, 2 * pad] occurs, per axis.
  assert {dy for dy, _ in offsets} == set(range(2 * pad + 1))
  assert {dx for _, dx in offsets} == set(range(2 * pad + 1))


# ---------------------------------------------------------------------------
# Batch order.


def test_train_batches_epoch_is_permutation_and_deterministic():
  n, bs = 103, 10
  assert batches.steps_per_epoch(n, bs) == 10
  epoch0 = np.concatenate([batches.train_batch_indices(7, s, n, bs)
                           for s in range(10)])
  assert len(np.unique(epoch0)) == 100 and epoch0.max() < n
  np.testing.assert_array_equal(epoch0, batches.epoch_permutation(7, 0, n)[:100])
  epoch1 = np.concatenate([batches.train_batch_indices(7, s, n, bs)
                           for s in range(10, 20)])
  assert len(np.unique(epoch1)) == 100 and not np.array_equal(epoch0, epoch1)
  other_seed = batches.train_batch_indices(8, 0, n, bs)
  assert not np.array_equal(other_seed, epoch0[:10])


def test_batches_resumable():
  n, bs = 500, 32
  before = [batches.train_batch_indices(3, s, n, bs) for s in range(60)]
  meta_before = [batches.meta_batch_indices(3, s, 50, 16) for s in range(60)]
  batches._permutation.cache_clear()  # A "restarted" process.
  np.testing.assert_array_equal(batches.train_batch_indices(3, 47, n, bs),
                                before[47])
  np.testing.assert_array_equal(batches.meta_batch_indices(3, 47, 50, 16),
                                meta_before[47])
  before[47][:] = -1  # Returned arrays are copies: no effect on later calls.
  assert (batches.train_batch_indices(3, 47, n, bs) >= 0).all()


def test_meta_batches_cycle_through_meta_set():
  # 50 examples, batches of 10: every 5 batches are one permutation.
  stream = np.concatenate([batches.meta_batch_indices(0, s, 50, 10)
                           for s in range(15)])
  for cycle in range(3):
    assert sorted(stream[cycle * 50:(cycle + 1) * 50]) == list(range(50))
  assert not np.array_equal(stream[:50], stream[50:100])
  # Batch larger than the meta set: every example appears 2 or 3 times.
  big = batches.meta_batch_indices(0, 3, 20, 50)
  assert big.shape == (50,)
  assert set(np.bincount(big, minlength=20)) <= {2, 3}
  # Non-dividing batch sizes straddle cycles without dropping anything.
  straddle = np.concatenate([batches.meta_batch_indices(1, s, 50, 20)
                             for s in range(5)])
  assert sorted(straddle) == sorted(list(range(50)) * 2)


def test_batch_errors():
  with pytest.raises(ConfigError, match='batch_size'):
    batches.train_batch_indices(0, 0, 10, 11)
  with pytest.raises(ConfigError, match='num_meta'):
    batches.meta_batch_indices(0, 0, 0, 10)


# ---------------------------------------------------------------------------
# Downloading the CIFAR archive (offline: file:// URLs to archives built here).

import hashlib  # pylint: disable=g-import-not-at-top,wrong-import-order

from famus_jax.data import download  # pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def _isolated_download_cache(monkeypatch, tmp_path_factory):
  """Points the default CIFAR directory away from ~/.cache for every test."""
  monkeypatch.setenv(download.CACHE_ENV,
                     str(tmp_path_factory.mktemp('famus_jax_cache')))


def _served_archive(tmp_path, dataset='cifar10', per_batch=20):
  """A fake official archive under tmp_path/served and its file:// URL."""
  path = testing.write_fake_cifar_archive(str(tmp_path / 'served'), dataset,
                                          per_batch=per_batch, seed=3)
  return path, 'file://' + path


def _no_network(*args, **kwargs):
  raise AssertionError(f'unexpected network access: {args} {kwargs}')


def test_download_from_file_url(tmp_path, capsys, monkeypatch):
  served, url = _served_archive(tmp_path)
  target = tmp_path / 'target'
  raw = sources.load_source('cifar10', 'cifar_archive', str(target), None,
                            download=True, url=url)
  landed = target / 'cifar-10-python.tar.gz'
  assert os.listdir(target) == ['cifar-10-python.tar.gz']  # No .part left.
  assert landed.read_bytes() == open(served, 'rb').read()
  assert raw.train_images.shape == (100, 32, 32, 3)
  assert raw.test_images.shape == (20, 32, 32, 3)
  assert raw.train_labels.shape == (100,) and raw.train_labels.dtype == np.int32
  assert raw.description == f'cifar_archive:{landed}'
  local = sources.load_source('cifar10', 'cifar_archive', str(tmp_path /
                                                              'served'), None)
  np.testing.assert_array_equal(raw.train_images, local.train_images)
  size = os.path.getsize(served) / (1 << 20)
  err = capsys.readouterr().err
  assert f'Downloading {url}: {size:.1f}/{size:.1f} MiB (100%)' in err
  assert err.endswith('\n') and err.count('\n') == 1
  # Present now: the next load reads it without downloading.
  monkeypatch.setattr(download.urllib.request, 'urlopen', _no_network)
  again = sources.load_source('cifar10', 'cifar_archive', str(target), None,
                              download=True, url=url)
  np.testing.assert_array_equal(again.test_labels, raw.test_labels)


def test_auto_tries_local_then_tfds_then_download_into_cache(tmp_path,
                                                             monkeypatch):
  _, url = _served_archive(tmp_path, 'cifar100', per_batch=40)
  tried = []

  def fake_tfds(dataset, data_dir):
    tried.append(('tfds', dataset, data_dir))
    raise sources.SourceFailed('not prepared')

  monkeypatch.setattr(sources, '_load_tfds', fake_tfds)
  cache = tmp_path / 'cache'
  monkeypatch.setenv(download.CACHE_ENV, str(cache))
  assert download.default_data_dir() == str(cache)
  raw = sources.load_source('cifar100', 'auto', '', None, download=True,
                            url=url)
  assert tried == [('tfds', 'cifar100', '')]
  assert (cache / 'cifar-100-python.tar.gz').is_file()
  assert raw.train_images.shape == (200, 32, 32, 3)
  assert raw.train_coarse_labels.shape == (200,)
  assert raw.num_classes == 100
  # Second time the local copy in the cache wins: no tfds, no download.
  monkeypatch.setattr(download.urllib.request, 'urlopen', _no_network)
  sources.load_source('cifar100', 'auto', '', None, download=True, url=url)
  assert len(tried) == 1


def test_download_bad_url_message(tmp_path):
  url = 'file://' + str(tmp_path / 'missing' / 'cifar-10-python.tar.gz')
  target = tmp_path / 'target'
  with pytest.raises(DataNotFoundError) as excinfo:
    sources.load_source('cifar10', 'cifar_archive', str(target), None,
                        download=True, url=url)
  message = str(excinfo.value)
  assert f'download of {url} into {target}: URLError' in message
  assert f'cifar_archive at {target}: no cifar-10-python.tar.gz' in message
  assert f"data_dir={str(target)!r}" in message
  assert '--config.data_dir=DIR' in message
  assert '--config.data_source=cifar_archive' in message
  assert '--config.download=False' in message
  assert os.listdir(target) == []  # The temporary file is gone.


def test_download_off_never_touches_the_network(tmp_path, monkeypatch):
  monkeypatch.setattr(download.urllib.request, 'urlopen', _no_network)
  monkeypatch.setattr(download, 'fetch_cifar', _no_network)
  for source in ('cifar_archive', 'auto'):
    with pytest.raises(DataNotFoundError) as excinfo:
      sources.load_source('cifar10', source, str(tmp_path), None,
                          download=False, url='http://example.invalid/x')
    message = str(excinfo.value)
    assert 'downloading is off (config.download=False)' in message
    assert str(tmp_path) in message and 'example.invalid' not in message
  # Existing callers that pass no download flag stay offline too.
  with pytest.raises(DataNotFoundError, match='downloading is off'):
    sources.load_source('cifar10', 'cifar_archive', str(tmp_path), None)


def test_download_checks_md5_of_official_archive(tmp_path, monkeypatch):
  served, url = _served_archive(tmp_path)
  good = hashlib.md5(open(served, 'rb').read()).hexdigest()
  assert download.resolve_url('cifar10') == (
      'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
      'c58f30108f718f92721af3b95e74349a')
  assert download.resolve_url('cifar100', 'file:///x') == ('file:///x', None)
  # Make the fake archive "official" with a wrong md5: refused, nothing kept.
  monkeypatch.setitem(download.OFFICIAL_ARCHIVES, 'cifar10', (url, '0' * 32))
  target = tmp_path / 'target'
  with pytest.raises(DataNotFoundError, match=f'md5 .*{good}, expected 0+'):
    sources.load_source('cifar10', 'cifar_archive', str(target), None,
                        download=True)
  assert os.listdir(target) == []
  monkeypatch.setitem(download.OFFICIAL_ARCHIVES, 'cifar10', (url, good))
  raw = sources.load_source('cifar10', 'cifar_archive', str(target), None,
                            download=True)
  assert raw.train_images.shape == (100, 32, 32, 3)


def test_download_custom_url_must_serve_a_tar(tmp_path):
  page = tmp_path / 'page.html'
  page.write_text('<html>not found</html>')
  target = tmp_path / 'target'
  with pytest.raises(DataNotFoundError, match='did not serve a tar archive'):
    sources.load_source('cifar10', 'cifar_archive', str(target), None,
                        download=True, url=f'file://{page}')
  assert os.listdir(target) == []


def test_base_config_download_fields():
  c = base_schema.get_config()
  assert c.download is True and c.cifar_url == ''


def test_download_over_http_and_404(tmp_path):
  import functools as ft  # pylint: disable=g-import-not-at-top,reimported
  import http.server  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top

  served, _ = _served_archive(tmp_path)

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  handler = ft.partial(Quiet, directory=os.path.dirname(served))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    base = f'http://127.0.0.1:{server.server_address[1]}'
    raw = sources.load_source('cifar10', 'auto', str(tmp_path / 'a'), None,
                              download=True,
                              url=f'{base}/cifar-10-python.tar.gz')
    assert raw.train_images.shape == (100, 32, 32, 3)
    with pytest.raises(DataNotFoundError,
                       match=r'nope\.tar\.gz into .*HTTPError: HTTP Error 404'):
      sources.load_source('cifar10', 'cifar_archive', str(tmp_path / 'b'),
                          None, download=True, url=f'{base}/nope.tar.gz')
  finally:
    server.shutdown()
    server.server_close()
