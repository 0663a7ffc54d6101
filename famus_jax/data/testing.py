"""Helpers for tests: small data sets written in the official on-disk formats.

`write_fake_cifar_archive` builds a `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` laid out
exactly like the official one (pickled dicts with bytes keys, (N, 3072) uint8 channel-major rows),
only smaller. Images are a per-class mean pattern plus noise, so a small model can learn them;
labels are balanced over the training set.
"""

import io
import os
import pickle
import tarfile

import numpy as np

from famus_jax.data import cifar_archive
from famus_jax.data import datasets
from famus_jax.data import idx


def _class_images(labels: np.ndarray, patterns: np.ndarray,
                  rng: np.random.Generator, noise_std: float) -> np.ndarray:
  """uint8 (N, *pattern_shape): `patterns[labels]` + Gaussian noise."""
  noise = rng.normal(0.0, noise_std, size=(len(labels),) + patterns.shape[1:])
  return np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)


def _balanced_labels(n: int, num_classes: int,
                     rng: np.random.Generator) -> np.ndarray:
  return rng.permutation(np.arange(n) % num_classes).astype(np.int32)


def write_fake_cifar_archive(directory: str, dataset: str = 'cifar10',
                             per_batch: int = 20, seed: int = 0,
                             extracted: bool = False) -> str:
  """Writes a small CIFAR archive in the official format; returns the path of the `.tar.gz`.

  The archive goes into `directory` (created if needed; pass it as `config.data_dir`), for
  `dataset` 'cifar10' or 'cifar100'. `per_batch` is the number of images per batch file: CIFAR-10
  gets 5 training batches and one test batch (5 * per_batch training images); CIFAR-100 gets one
  `train` file with 5 * per_batch images and a `test` file with per_batch. Training labels are
  balanced (arange % C, shuffled), so per_batch=20 gives 10 images per class for CIFAR-10 and 1 per
  class for CIFAR-100. `seed` makes the content deterministic, and `extracted=True` also writes
  the extracted folder next to the archive.
  """
  if dataset not in cifar_archive.ARCHIVE_LAYOUT:
    raise ValueError(f'dataset must be cifar10 or cifar100, got {dataset!r}')
  archive, folder, train_files, test_files, meta_file = (
      cifar_archive.ARCHIVE_LAYOUT[dataset])
  spec = datasets.DATASET_SPECS[dataset]
  num_classes = spec.num_classes
  rng = np.random.default_rng(seed)
  # Channel-major patterns (C, 3, 32, 32) flattened to rows of 3072.
  patterns = rng.uniform(40.0, 215.0, size=(num_classes, 3072))

  def batch(n, name, labels=None):
    if labels is None:
      labels = _balanced_labels(n, num_classes, rng)
    data = _class_images(labels, patterns, rng, noise_std=25.0)
    content = {
        b'batch_label': name.encode(),
        b'data': data,
        b'filenames': [f'{name}_{i}.png'.encode() for i in range(n)],
    }
    if dataset == 'cifar10':
      content[b'labels'] = [int(v) for v in labels]
    else:
      content[b'fine_labels'] = [int(v) for v in labels]
      content[b'coarse_labels'] = [
          int(v) for v in datasets.CIFAR100_FINE_TO_COARSE[labels]]
    return content

  files = {}
  n_train = 5 * per_batch
  train_labels = _balanced_labels(n_train, num_classes, rng)
  chunks = np.array_split(train_labels, len(train_files))
  for name, labels in zip(train_files, chunks):
    files[name] = batch(len(labels), name, labels)
  for name in test_files:
    files[name] = batch(per_batch, name)
  if dataset == 'cifar10':
    files[meta_file] = {
        b'label_names': [n.encode() for n in spec.class_names],
        b'num_cases_per_batch': per_batch, b'num_vis': 3072}
  else:
    files[meta_file] = {
        b'fine_label_names': [n.encode() for n in spec.class_names],
        b'coarse_label_names': [
            n.encode() for n in datasets.CIFAR100_COARSE_CLASSES]}

  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, archive)
  with tarfile.open(path, 'w:gz') as tar:
    for name, content in files.items():
      data = pickle.dumps(content, protocol=2)
      info = tarfile.TarInfo(f'{folder}/{name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  if extracted:
    os.makedirs(os.path.join(directory, folder), exist_ok=True)
    for name, content in files.items():
      with open(os.path.join(directory, folder, name), 'wb') as f:
        pickle.dump(content, f, protocol=2)
  return path


def write_fake_idx_dir(directory: str, num_train: int = 60, num_test: int = 20,
                       seed: int = 0, compress: bool = True) -> str:
  """Writes the four Fashion-MNIST IDX files (28x28, 10 classes) to `directory`; returns it."""
  rng = np.random.default_rng(seed)
  patterns = rng.uniform(40.0, 215.0, size=(10, 28, 28))
  os.makedirs(directory, exist_ok=True)
  suffix = '.gz' if compress else ''
  for split, n in (('train', num_train), ('test', num_test)):
    labels = _balanced_labels(n, 10, rng)
    images = _class_images(labels, patterns, rng, noise_std=25.0)
    image_stem, label_stem = idx.IDX_FILES[split]
    idx.write_idx(os.path.join(directory, image_stem + suffix), images)
    idx.write_idx(os.path.join(directory, label_stem + suffix),
                  labels.astype(np.uint8))
  return directory
