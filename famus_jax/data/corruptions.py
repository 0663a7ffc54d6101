"""Label noise and class imbalance, applied to host numpy label arrays.

Every function is deterministic given its `np.random.Generator`; none of them modifies its inputs.
Labels are int32 (N,) class indices.
"""

import numpy as np

from famus_jax.data import datasets

# CIFAR-10 asymmetric pairs (class-dependent flips between similar classes): truck -> automobile,
# bird -> airplane, deer -> horse, cat <-> dog.
CIFAR10_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# Fashion-MNIST asymmetric pairs. Chosen among the classes that classifiers (and annotators)
# confuse most, keeping each flip within a garment family: upper-body garments T-shirt/top <-> Shirt
# and Pullover <-> Coat swap with each other; the three footwear classes rotate Sandal -> Sneaker ->
# Ankle boot -> Sandal. Trouser, Dress and Bag have no close look-alike and keep their labels.
FASHION_MNIST_PAIRS = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9, 9: 5}


def symmetric_noise(labels: np.ndarray, rate: float, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Symmetric ("uniform") label noise, MW-Net's "unif" convention: int32 (N,) noisy labels.

  Each of the int (N,) clean `labels`, independently with probability `rate` (the replacement
  probability, in [0, 1]), is replaced by a uniform draw over ALL `num_classes` (C) classes, the
  true class included; the draws come from the numpy Generator `rng`. The expected fraction of
  labels that actually change is therefore rate * (C - 1) / C (e.g. 0.36 for rate 0.4 on 10
  classes), not `rate`.
  """
  labels = np.asarray(labels, dtype=np.int32)
  replace = rng.random(labels.shape) < rate
  draws = rng.integers(0, num_classes, size=labels.shape, dtype=np.int32)
  return np.where(replace, draws, labels).astype(np.int32)


def asymmetric_noise(labels: np.ndarray, rate: float, pair_map: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
  """Class-dependent ("pair") label noise: int32 (N,) noisy labels.

  Each of the int (N,) clean `labels`, independently with probability `rate` (the flip probability,
  in [0, 1]), becomes `pair_map[label]`; `pair_map` is int (C,), the target class of each class
  (see `asymmetric_pair_map`), and the flips come from the numpy Generator `rng`. Classes with
  pair_map[c] == c never change, so the realised noise rate is rate * (fraction of examples in
  mapped classes).
  """
  labels = np.asarray(labels, dtype=np.int32)
  pair_map = np.asarray(pair_map, dtype=np.int32)
  flip = rng.random(labels.shape) < rate
  return np.where(flip, pair_map[labels], labels).astype(np.int32)


def next_in_superclass_map(fine_to_coarse: np.ndarray) -> np.ndarray:
  """Pair map: each class -> the next class of its super-class.

  `fine_to_coarse` is int (C,), the super-class of each class; the result is the int32 (C,) pair
  map. Within each super-class the fine classes are ordered by fine index and the map is cyclic
  (the last one goes to the first). For CIFAR-100 with the standard assignment, e.g. aquatic
  mammals (4 beaver, 30 dolphin, 55 otter, 72 seal, 95 whale): 4->30->55->72->95->4.
  """
  fine_to_coarse = np.asarray(fine_to_coarse)
  pair_map = np.arange(len(fine_to_coarse), dtype=np.int32)
  for coarse in np.unique(fine_to_coarse):
    members = np.flatnonzero(fine_to_coarse == coarse)  # Sorted.
    pair_map[members] = np.roll(members, -1)
  return pair_map


def fine_to_coarse_from_labels(fine: np.ndarray, coarse: np.ndarray,
                               num_classes: int) -> np.ndarray | None:
  """Derives the fine -> coarse table from the paired label arrays `fine` and `coarse`.

  The result is the int32 (num_classes,) table, or None when some class is absent or the pairs are
  not a function of the fine label (e.g. random mock labels).
  """
  fine = np.asarray(fine, dtype=np.int64)
  coarse = np.asarray(coarse, dtype=np.int64)
  table = np.full((num_classes,), -1, dtype=np.int64)
  table[fine] = coarse
  if (table < 0).any() or not np.array_equal(table[fine], coarse):
    return None
  return table.astype(np.int32)


def asymmetric_pair_map(dataset: str, num_classes: int,
                        fine_to_coarse: np.ndarray | None = None
                        ) -> np.ndarray:
  """The documented asymmetric-noise map of a data set, an int32 (num_classes,) array.

  - cifar10: truck(9)->automobile(1), bird(2)->airplane(0), deer(4)->horse(7), cat(3)<->dog(5);
    the rest unchanged.
  - cifar100: next class within the super-class (`next_in_superclass_map`), using
    `fine_to_coarse` if given, else the standard CIFAR-100 table.
  - fashion_mnist: T-shirt/top(0)<->Shirt(6), Pullover(2)<->Coat(4),
    Sandal(5)->Sneaker(7)->Ankle boot(9)->Sandal(5); Trouser(1), Dress(3) and Bag(8) unchanged
    (see FASHION_MNIST_PAIRS for why).
  - synthetic: c -> (c + 1) % C.
  """
  identity = np.arange(num_classes, dtype=np.int32)
  if dataset == 'cifar10':
    pairs = CIFAR10_PAIRS
  elif dataset == 'fashion_mnist':
    pairs = FASHION_MNIST_PAIRS
  elif dataset == 'cifar100':
    if fine_to_coarse is None:
      fine_to_coarse = datasets.CIFAR100_FINE_TO_COARSE
    return next_in_superclass_map(fine_to_coarse)
  elif dataset == 'synthetic':
    return (identity + 1) % num_classes
  else:
    raise ValueError(f'no asymmetric map for dataset {dataset!r}')
  for source, target in pairs.items():
    identity[source] = target
  return identity


def long_tail_indices(labels: np.ndarray, imbalance_factor: float,
                      num_classes: int, rng: np.random.Generator
                      ) -> np.ndarray:
  """Indices of an exponentially long-tailed subset (class 0 the biggest).

  `labels` are the int (N,) clean labels, `num_classes` is C and `imbalance_factor` is
  n_max / n_min >= 1; the numpy Generator `rng` picks which examples of each class are kept. The
  result is the int64 (K,) sorted indices into `labels`.

  Class c keeps n_c = floor(n_max * mu ** (c / (C - 1))) randomly chosen examples,
  mu = 1 / imbalance_factor and n_max = the smallest class count in `labels` (equal to every count
  for the balanced CIFAR / Fashion-MNIST training sets). So n_0 = n_max and
  n_{C-1} = n_max / imbalance_factor. (A relative 1e-9 is added before the floor so that values
  such as 5000 * 0.01 = 50 are not floored to 49 by rounding error.) imbalance_factor == 1 keeps
  every example.
  """
  labels = np.asarray(labels)
  if imbalance_factor < 1:
    raise ValueError(f'imbalance_factor={imbalance_factor} must be >= 1')
  if imbalance_factor == 1:
    return np.arange(len(labels))
  counts = np.bincount(labels, minlength=num_classes)
  targets = long_tail_counts(int(counts.min()), imbalance_factor, num_classes)
  keep = []
  for c, n_c in enumerate(targets):
    members = np.flatnonzero(labels == c)
    keep.append(rng.choice(members, size=n_c, replace=False))
  return np.sort(np.concatenate(keep))


def long_tail_counts(n_max: int, imbalance_factor: float,
                     num_classes: int) -> list[int]:
  """The per-class counts n_c that `long_tail_indices` keeps."""
  mu = 1.0 / imbalance_factor
  return [int(np.floor(n_max * mu ** (c / (num_classes - 1)) * (1 + 1e-9)))
          for c in range(num_classes)]


def realised_noise_rate(noisy: np.ndarray, clean: np.ndarray) -> float:
  """Fraction of labels that differ from the clean ones (0.0 if empty)."""
  noisy, clean = np.asarray(noisy), np.asarray(clean)
  if noisy.size == 0:
    return 0.0
  return float(np.mean(noisy != clean))
