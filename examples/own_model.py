"""Re-weighting for a model and data of your own: a Flax CNN on noisy Fashion-MNIST arrays.

    python examples/own_model.py [--data_dir=/usr/share/datasets/fashion-mnist] [--workdir=...]

The network below is not one of famus_jax's; the data are plain numpy
arrays with 40% of the labels replaced at random. Part 1 runs FaMUS's step
in a loop written here and prints how the weights of clean and mislabelled
examples part; part 2 hands the same model and arrays to `famus_jax.fit`,
the trainer's loop (checkpoints, resume, evaluation), for exact MW-Net.
Minutes on a laptop CPU. Needs the real Fashion-MNIST IDX files (Debian's
dataset-fashion-mnist package, or the four files from the data set's page).
"""

import argparse
import gzip
import os

import flax.linen as nn
import numpy as np

import famus_jax


class SmallNet(nn.Module):
  """Three convolutions with BatchNorm and a global average: (n, 28, 28, 1) -> (n, 32)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    for features, stride in ((16, 1), (32, 2), (32, 2)):
      x = nn.Conv(features, (3, 3), strides=stride, use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
    return x.mean(axis=(1, 2))


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzip or not) as a numpy array."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  dims = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir: str, name: str) -> np.ndarray:
  for suffix in ('.gz', ''):
    path = os.path.join(data_dir, name + suffix)
    if os.path.exists(path):
      return read_idx(path)
  raise FileNotFoundError(f'{name}(.gz) is not in {data_dir}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default='/usr/share/datasets/fashion-mnist')
  parser.add_argument('--workdir', default='/tmp/famus_jax_own_model')
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  images = load(args.data_dir, 'train-images-idx3-ubyte')
  labels = load(args.data_dir, 'train-labels-idx1-ubyte').astype(np.int64)
  order = rng.permutation(len(labels))
  train, meta = order[:3000], order[3000:3200]          # 200 clean meta images
  noisy = labels[train].copy()
  flip = rng.random(len(train)) < 0.4                  # 40% symmetric noise
  noisy[flip] = rng.integers(0, 10, flip.sum())
  test_images = load(args.data_dir, 't10k-images-idx3-ubyte')[:2000]
  test_labels = load(args.data_dir, 't10k-labels-idx1-ubyte')[:2000]
  data = famus_jax.arrays_data(images[train], noisy, num_classes=10,
                               meta_images=images[meta], meta_labels=labels[meta],
                               test_images=test_images, test_labels=test_labels,
                               true_labels=labels[train])
  model = famus_jax.Classifier(SmallNet(), num_classes=10)

  # 1. FaMUS's step in a loop of your own.
  learner = famus_jax.Learner(model, data, method='famus', num_epochs=2,
                              **{'lr.boundaries_epochs': (2, 2)})
  wrong = data.train_labels != data.train_clean_labels
  state = learner.init_state()
  for step in range(learner.total_steps):
    batch = learner.batch(step)
    state, out = learner.step(state, batch)
    if (step + 1) % learner.steps_per_epoch == 0:
      state = learner.end_epoch(state, (step + 1) // learner.steps_per_epoch)
    if (step + 1) % 20 == 0:
      w, bad = np.asarray(out.example_weights), wrong[np.asarray(batch['index'])]
      print(f'step {step + 1}: weight of clean examples {w[~bad].mean():.2f}, '
            f'of mislabelled ones {w[bad].mean():.2f}')
  print('FaMUS in your loop:', learner.evaluate(state))

  # 2. The trainer's loop on the same model and arrays.
  summary = famus_jax.fit(model, data, workdir=args.workdir, method='mwnet', num_epochs=2,
                          eval_every=30, **{'lr.boundaries_epochs': (2, 2)})
  print(f'MW-Net with famus_jax.fit: last test accuracy {summary["last_test_accuracy"]:.4f} '
        f'(files in {args.workdir})')


if __name__ == '__main__':
  main()
