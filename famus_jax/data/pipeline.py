"""From a config to the arrays a run trains on: `build_data(config)`.

Order of operations (all on host numpy arrays, once per run):

1. load the source (clean labels);
2. long-tail subsampling of the training set (on clean labels);
3. clean, class-balanced meta split, removed from the training set; then, when `train_subset` > 0,
   a class-balanced subset of what is left;
4. label noise on the remaining training labels only (the meta set and the test set stay clean).

The data sets with real label noise (cifar10n, cifar100n, cnwl; data/real_noise.py) replace step 4:
their given labels are the training labels, the clean ones (-1 where unknown) are kept aside.

Each random step draws from its own generator `np.random.default_rng([config.seed, STREAM])`, so
changing e.g. the noise settings does not change which examples are in the meta set.
"""

import dataclasses
from typing import Any

import numpy as np

from famus_jax.data import corruptions
from famus_jax.data import datasets
from famus_jax.data import image_folder
from famus_jax.data import meta_split
from famus_jax.data import real_noise
from famus_jax.data import sources
from famus_jax.errors import ConfigError

# Sub-seed streams of config.seed, one per random step.
LONG_TAIL_STREAM = 1
META_SPLIT_STREAM = 2
NOISE_STREAM = 3
SUBSET_STREAM = 4

# Images per chunk when computing channel statistics (bounds float memory).
_STATS_CHUNK = 4096


@dataclasses.dataclass
class DataSplits:
  """Everything a run needs, in host memory.

  train_images: uint8 (N, H, W, C); for dataset='image_folder' an `image_folder.ImageFiles` of
    that shape and dtype, which decodes the files it is indexed with (so are meta_images and
    test_images): nothing holds the whole set.
  train_labels: int32 (N,) labels training sees (noisy).
  train_clean_labels: int32 (N,) true labels; diagnostics only, never for training (-1 where a
    real-noise data set does not know it: a CNWL example flagged not clean).
  meta_images: uint8 (M, H, W, C) clean, class-balanced meta set (M may be 0).
  meta_labels: int32 (M,) clean labels.
  test_images: uint8 (T, H, W, C).
  test_labels: int32 (T,).
  num_classes: number of classes.
  class_names: tuple of num_classes names.
  mean: float32 (C,) per-channel mean of train_images in [0, 1] units (pixel / 255), for
    `augment_batch`.
  std: float32 (C,) per-channel standard deviation, same units.
  info: dict (JSON-serialisable) with dataset, source, num_train, num_meta, num_test,
    realised_noise_rate, class_counts (clean per-class counts of the training set),
    noisy_class_counts, noise_type, noise_rate, imbalance_factor, seed, and pair_map_source for
    asymmetric noise.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  train_clean_labels: np.ndarray
  meta_images: np.ndarray
  meta_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  mean: np.ndarray
  std: np.ndarray
  info: dict[str, Any]

  @property
  def is_noisy(self) -> np.ndarray:
    """bool (N,): True where the training label differs from the clean one."""
    return self.train_labels != self.train_clean_labels

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  @property
  def num_meta(self) -> int:
    return len(self.meta_labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C)."""
    return tuple(self.train_images.shape[1:])


def validate_data_config(config: Any) -> None:
  """Checks the data fields of `config`; raises ConfigError naming the field."""
  sources.check_dataset_and_source(config.dataset, config.data_source)
  if config.noise_type not in datasets.NOISE_TYPES:
    raise ConfigError(f'noise_type={config.noise_type!r} is unknown; allowed '
                      f'values: {", ".join(datasets.NOISE_TYPES)}')
  if not 0.0 <= config.noise_rate < 1.0:
    raise ConfigError(f'noise_rate={config.noise_rate} must be in [0, 1)')
  if not config.imbalance_factor >= 1.0:
    raise ConfigError(f'imbalance_factor={config.imbalance_factor} must be '
                      '>= 1 (n_max / n_min; 1 = balanced)')
  if config.num_meta < 0:
    raise ConfigError(f'num_meta={config.num_meta} must be >= 0')
  if config.train_subset < 0:
    raise ConfigError(f'train_subset={config.train_subset} must be >= 0 (0 = all)')
  real_noise.check_config(config)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 (N, H, W, C) images, in [0, 1] units.

  The result is (mean, std), float32 (C,) each. std is floored at 1e-3 so normalising never
  divides by zero.
  """
  channels = images.shape[-1]
  total = np.zeros((channels,), np.float64)
  total_sq = np.zeros((channels,), np.float64)
  for start in range(0, len(images), _STATS_CHUNK):
    chunk = images[start:start + _STATS_CHUNK].reshape(-1, channels)
    chunk = chunk.astype(np.float64)
    total += chunk.sum(axis=0)
    total_sq += np.square(chunk).sum(axis=0)
  count = max(1, images.size // channels)
  mean = total / count
  var = np.maximum(total_sq / count - np.square(mean), 0.0)
  std = np.maximum(np.sqrt(var), 255e-3)
  return (mean / 255).astype(np.float32), (std / 255).astype(np.float32)


def _pair_map(dataset: str, raw: sources.RawData,
              keep: np.ndarray) -> tuple[np.ndarray, str]:
  """Asymmetric-noise map and where its super-classes came from."""
  if dataset != 'cifar100':
    return corruptions.asymmetric_pair_map(dataset, raw.num_classes), 'table'
  if raw.train_coarse_labels is not None:
    table = corruptions.fine_to_coarse_from_labels(
        raw.train_labels[keep], raw.train_coarse_labels[keep], raw.num_classes)
    if table is not None:
      return (corruptions.asymmetric_pair_map(dataset, raw.num_classes, table),
              'source coarse labels')
  return (corruptions.asymmetric_pair_map(dataset, raw.num_classes),
          'standard CIFAR-100 super-class table')


def build_data(config: Any) -> DataSplits:
  """Loads and corrupts the data set described by `config`, into a `DataSplits`.

  It reads config.seed, dataset, data_source, data_dir, noise_type, noise_rate, imbalance_factor,
  num_meta, train_subset and synthetic.* (and the real-noise fields of data/real_noise.py); see
  the `DataSplits` docstring for the shapes of the result. Raises ConfigError on invalid data
  fields (the message names the field), and DataNotFoundError when the data set is not where the
  config says.
  """
  validate_data_config(config)
  seed = int(config.seed)
  if config.dataset == 'arrays':
    raise ConfigError("config.dataset='arrays' names in-memory arrays handed to the Python API "
                      '(famus_jax.fit, famus_jax.Learner with famus_jax.arrays_data); there is '
                      'nothing to load: choose another data set for a config-file run')
  if config.dataset == 'image_folder':
    raw = image_folder.load_image_folder(config)
  elif config.dataset in datasets.REAL_NOISE_DATASETS:
    raw = real_noise.load_real_noise(config)
  else:
    raw = sources.load_source(config.dataset, config.data_source,
                              config.data_dir, config.synthetic, seed=seed,
                              download=config.download, url=config.cifar_url)
  num_classes = raw.num_classes
  clean = raw.train_labels
  given = raw.train_noisy_labels  # real label noise (data/real_noise.py): training sees these
  lowest = 0 if given is None else real_noise.UNKNOWN_CLEAN  # a clean label it does not know
  if clean.size and (clean.min() < lowest or clean.max() >= num_classes):
    raise ValueError(f'{raw.description}: training labels outside '
                     f'[0, {num_classes})')

  # 1. Long tail (clean labels).
  keep = corruptions.long_tail_indices(
      clean, config.imbalance_factor, num_classes,
      np.random.default_rng([seed, LONG_TAIL_STREAM]))
  # 2. Clean, class-balanced meta split.
  meta_rng = np.random.default_rng([seed, META_SPLIT_STREAM])
  if raw.meta_pool_labels is None:
    meta_pos, train_pos = meta_split.class_balanced_split(
        clean[keep], config.num_meta, num_classes, meta_rng)
    meta_idx, train_idx = keep[meta_pos], keep[train_pos]
    meta_images, meta_labels = image_folder.take_images(raw.train_images, meta_idx), clean[meta_idx]
  else:  # the source's own clean meta pool (an image folder's meta list)
    meta_idx, _ = meta_split.class_balanced_split(raw.meta_pool_labels, config.num_meta,
                                                  num_classes, meta_rng)
    train_idx = keep
    meta_images = image_folder.take_images(raw.meta_pool_images, meta_idx)
    meta_labels = raw.meta_pool_labels[meta_idx]
  # 2b. Optional class-balanced subset of the rest (short experiments).
  if config.train_subset:
    sub_pos, _ = meta_split.class_balanced_split(
        (clean if given is None else given)[train_idx], config.train_subset, num_classes,
        np.random.default_rng([seed, SUBSET_STREAM]), field='train_subset')
    train_idx = train_idx[sub_pos]
  train_clean = clean[train_idx]
  # 3. Noise on the remaining training labels.
  noise_rng = np.random.default_rng([seed, NOISE_STREAM])
  info_extra = {}
  if given is not None:
    train_noisy = given[train_idx]
    info_extra = real_noise.info(config)
  elif config.noise_type == 'symmetric':
    train_noisy = corruptions.symmetric_noise(
        train_clean, config.noise_rate, num_classes, noise_rng)
  elif config.noise_type == 'asymmetric':
    pair_map, map_source = _pair_map(config.dataset, raw, keep)
    train_noisy = corruptions.asymmetric_noise(
        train_clean, config.noise_rate, pair_map, noise_rng)
    info_extra = {'pair_map': pair_map.tolist(),
                  'pair_map_source': map_source}
  else:
    train_noisy = train_clean.copy()

  train_images = image_folder.take_images(raw.train_images, train_idx)
  if isinstance(train_images, image_folder.ImageFiles):
    mean, std = image_folder.file_channel_stats(config, train_images, channel_stats)
  else:
    mean, std = channel_stats(train_images)
  info = {
      'dataset': config.dataset,
      'source': raw.description,
      'seed': seed,
      'num_train': int(len(train_idx)),
      'num_meta': int(len(meta_idx)),
      'num_test': int(len(raw.test_labels)),
      'noise_type': config.noise_type,
      'noise_rate': float(config.noise_rate),
      'realised_noise_rate': corruptions.realised_noise_rate(
          train_noisy, train_clean),
      'imbalance_factor': float(config.imbalance_factor),
      'class_counts': np.bincount(train_clean[train_clean >= 0],
                                  minlength=num_classes).tolist(),
      'noisy_class_counts': np.bincount(train_noisy,
                                        minlength=num_classes).tolist(),
      **info_extra,
  }
  return DataSplits(
      train_images=train_images,
      train_labels=train_noisy.astype(np.int32),
      train_clean_labels=train_clean.astype(np.int32),
      meta_images=meta_images,
      meta_labels=meta_labels.astype(np.int32),
      test_images=raw.test_images,
      test_labels=raw.test_labels.astype(np.int32),
      num_classes=num_classes,
      class_names=tuple(raw.class_names),
      mean=mean, std=std, info=info)
