"""Clean, class-balanced meta (validation) set carved out of the training set."""

import numpy as np

from famus_jax.errors import ConfigError


def class_balanced_split(clean_labels: np.ndarray, num_meta: int,
                         num_classes: int, rng: np.random.Generator,
                         field: str = 'num_meta'
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Splits training indices into a class-balanced meta set and the rest.

  `clean_labels` are the int (N,) clean labels of the (possibly long-tailed) training set and
  `num_classes` is C. The meta set takes num_meta // num_classes examples of every class, chosen
  at random (by the numpy Generator `rng`) by their CLEAN labels; those examples are removed from
  the training set. `num_meta` is the total meta size (0 gives an empty meta set) and must be a
  multiple of `num_classes`; each class must keep at least one training example. `field` is the
  config field named in error messages (the same split also draws `train_subset`).

  The result is (meta_idx, rest_idx): disjoint sorted int64 index arrays, of sizes num_meta and
  N - num_meta, that together cover range(N). Raises ConfigError when `num_meta` is negative, not a
  multiple of `num_classes`, or larger than some class allows (the message names the class and its
  count).
  """
  clean_labels = np.asarray(clean_labels)
  n = len(clean_labels)
  if num_meta < 0:
    raise ConfigError(f'{field}={num_meta} must be >= 0')
  if num_meta == 0:
    return np.zeros((0,), np.int64), np.arange(n, dtype=np.int64)
  if num_meta % num_classes:
    raise ConfigError(
        f'{field}={num_meta} must be a multiple of the number of classes '
        f'({num_classes}) so the meta set is class-balanced')
  per_class = num_meta // num_classes
  counts = np.bincount(clean_labels, minlength=num_classes)
  for c in range(num_classes):
    if counts[c] < per_class + 1:
      raise ConfigError(
          f'{field}={num_meta} needs {per_class} examples of every '
          f'class plus at least one left over, but class {c} has '
          f'only {counts[c]} training examples (after long-tail '
          f'subsampling); lower {field} to at most '
          f'{max(0, int(counts.min()) - 1) * num_classes}')
  meta = [rng.choice(np.flatnonzero(clean_labels == c), size=per_class,
                     replace=False) for c in range(num_classes)]
  meta_idx = np.sort(np.concatenate(meta)).astype(np.int64)
  is_meta = np.zeros((n,), bool)
  is_meta[meta_idx] = True
  return meta_idx, np.flatnonzero(~is_meta).astype(np.int64)
