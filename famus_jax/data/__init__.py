"""Data layer: loading, label noise / long tail, meta split, batches, augment.

Typical use:

  splits = data.build_data(config)                  # host numpy arrays
  idx = data.batches.train_batch_indices(seed, step, splits.num_train, bs)
  x = data.augment_batch(splits.train_images[idx], rng, crop_padding=4, flip=True,
                         mean=splits.mean, std=splits.std, train=True)  # float32 (B, H, W, C)
"""

from famus_jax.data import batches
from famus_jax.data import corruptions
from famus_jax.data.augment import augment_batch
from famus_jax.data.batches import epoch_permutation
from famus_jax.data.batches import meta_batch_indices
from famus_jax.data.batches import steps_per_epoch
from famus_jax.data.batches import train_batch_indices
from famus_jax.data.datasets import DATASET_SPECS
from famus_jax.data.datasets import DATASETS
from famus_jax.data.datasets import NOISE_TYPES
from famus_jax.data.datasets import SOURCES
from famus_jax.data.pipeline import build_data
from famus_jax.data.pipeline import DataSplits
from famus_jax.data.sources import load_source
from famus_jax.data.sources import RawData
from famus_jax.errors import ConfigError
from famus_jax.errors import DataNotFoundError

__all__ = [
    'augment_batch', 'batches', 'build_data', 'ConfigError', 'corruptions',
    'DATASET_SPECS', 'DATASETS', 'DataNotFoundError', 'DataSplits',
    'epoch_permutation', 'load_source', 'meta_batch_indices', 'NOISE_TYPES',
    'RawData', 'SOURCES', 'steps_per_epoch', 'train_batch_indices',
]
