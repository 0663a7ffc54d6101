"""FSR's dictionary R: a class-balanced buffer of training examples as proxy reward data.

Layout: R is an int32 (C, k) array of training-set ids, row c holding k ids
whose *noisy* (training) label is c, so |R| = C * k exactly and the reward
label of a slot is its row. The images of R live next to it on the device,
uint8 (C, k, H, W, channels) (2000 CIFAR images = 6 MB), so the jitted step
draws reward batches without any host work; they are refreshed on the host
once per epoch.

- Start: a balanced random draw (`balanced_random_ids`).
- Every epoch: per class, the k examples with the best momentum meta-margin
  score (`top_score_ids`, FSR Eq. 4-5).
- A class with fewer than k examples fills its row by repeating its examples
  (in score order), so R stays exactly balanced and exactly |R| in size; the
  reward batch is then still balanced over classes (the reference code samples
  with replacement in the same situation).

Clean labels are only used for the purity diagnostic (`purity`), on the host.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _members(labels: np.ndarray, num_classes: int) -> list:
  out = [np.flatnonzero(labels == c) for c in range(num_classes)]
  empty = [c for c, m in enumerate(out) if len(m) == 0]
  if empty:
    raise ValueError(f'FSR dictionary: no training example has (noisy) label {empty}; '
                     'a class-balanced dictionary needs every class')
  return out


def _fill(ranked: np.ndarray, per_class: int) -> np.ndarray:
  """The first `per_class` of `ranked`, cycling when there are fewer."""
  if len(ranked) >= per_class:
    return ranked[:per_class]
  return np.resize(ranked, per_class)


def balanced_random_ids(labels: np.ndarray, num_classes: int, per_class: int,
                        rng: np.random.Generator) -> np.ndarray:
  """int32 (C, k): per class, k ids drawn at random without replacement (cycled if short)."""
  rows = [_fill(rng.permutation(m), per_class) for m in _members(np.asarray(labels), num_classes)]
  return np.stack(rows).astype(np.int32)


def top_score_ids(labels: np.ndarray, scores: np.ndarray, visits: np.ndarray,
                  num_classes: int, per_class: int) -> np.ndarray:
  """int32 (C, k): per class, the ids of the k highest scores (ties: lower id first).

  Examples never visited by training (visits == 0) rank below every visited one.
  """
  scores = np.where(np.asarray(visits) > 0, np.asarray(scores, np.float64), -np.inf)
  rows = []
  for members in _members(np.asarray(labels), num_classes):
    order = np.argsort(-scores[members], kind='stable')
    rows.append(_fill(members[order], per_class))
  return np.stack(rows).astype(np.int32)


def purity(ids: np.ndarray, noisy_labels: np.ndarray, clean_labels: np.ndarray) -> float:
  """Fraction of dictionary slots whose training label is the clean label."""
  ids = np.asarray(ids).ravel()
  return float(np.mean(np.asarray(noisy_labels)[ids] == np.asarray(clean_labels)[ids]))


def reward_slots(rng, num_classes: int, per_class: int, batch_size: int):
  """A class-balanced reward batch drawn from R on the device.

  Returns (rows (q,), columns (q,)) int32: slot (rows[j], columns[j]) of R,
  whose reward label is rows[j]. Every class gets q // C slots and q % C
  distinct random classes one more; within a class the slots are distinct
  (a random order of its k slots), repeating only when a class needs more
  than k.
  """
  base, extra = divmod(batch_size, num_classes)
  order_rng, class_rng = jax.random.split(rng)
  keys = jax.random.split(order_rng, num_classes)
  orders = jax.vmap(lambda key: jax.random.permutation(key, per_class))(keys)   # (C, k)
  rows = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), base)
  occurrence = jnp.arange(base * num_classes, dtype=jnp.int32) // num_classes
  if extra:
    rows = jnp.concatenate(
        [rows, jax.random.permutation(class_rng, num_classes)[:extra].astype(jnp.int32)])
    occurrence = jnp.concatenate([occurrence, jnp.full((extra,), base, jnp.int32)])
  columns = orders[rows, occurrence % per_class].astype(jnp.int32)
  return rows, columns
