"""Deterministic host-side batch order: a pure function of (seed, step).

A resumed run that restores `step` sees exactly the batches it would have seen without the
interruption; nothing about the order lives in mutable state.

- Training: epoch e is the permutation `epoch_permutation(seed, e, n)`; step s is batch
  s % steps_per_epoch of epoch s // steps_per_epoch, where steps_per_epoch = n // batch_size (the
  last incomplete batch is dropped).
- Meta: an endless stream made of the meta permutations of cycles 0, 1, 2... laid end to end; meta
  step s takes positions [s * B, (s + 1) * B) of the stream. Nothing is dropped, a batch may
  straddle two cycles, and if B > num_meta a batch spans several cycles, so examples repeat within
  a batch but every example is used equally often (to within one per batch).
"""

import functools

import numpy as np

from famus_jax.errors import ConfigError

# Stream identifiers mixed into the seed, so training and meta orders differ.
_TRAIN_STREAM = 0x7452  # 'tR'
_META_STREAM = 0x6d45  # 'mE'
# Streams over subsets of the training set (the co-trained pair's labelled and unlabelled parts).
SUBSET_STREAMS = {'meta': _META_STREAM, 'labelled': 0x6c42, 'unlabelled': 0x7542}  # 'lB', 'uB'


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch: `num_examples // batch_size`."""
  return num_examples // batch_size


@functools.lru_cache(maxsize=16)
def _permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
  perm = np.random.default_rng([seed, stream, epoch]).permutation(n)
  perm.setflags(write=False)
  return perm


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The int64 (n,) training order of `epoch` (a read-only array)."""
  return _permutation(int(seed), _TRAIN_STREAM, int(epoch), int(n))


def train_batch_indices(seed: int, step: int, num_examples: int,
                        batch_size: int) -> np.ndarray:
  """The int64 (batch_size,) training indices of `step` (counted from 0).

  Raises ConfigError when `batch_size` is not in [1, num_examples].
  """
  if batch_size < 1 or batch_size > num_examples:
    raise ConfigError(f'batch_size={batch_size} must be in [1, number of '
                      f'training examples = {num_examples}]')
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, pos = divmod(int(step), per_epoch)
  perm = epoch_permutation(seed, epoch, num_examples)
  return perm[pos * batch_size:(pos + 1) * batch_size].copy()


def meta_batch_indices(seed: int, step: int, num_meta: int,
                       meta_batch_size: int) -> np.ndarray:
  """The int64 (meta_batch_size,) meta-set indices of meta step `step`.

  See the module docstring: cycling permutations of the meta set, consumed as one stream, so any
  `meta_batch_size` works (also > `num_meta`). Raises ConfigError when `num_meta` or
  `meta_batch_size` is < 1.
  """
  if num_meta < 1:
    raise ConfigError(f'num_meta={num_meta}: this method needs a meta set '
                      '(num_meta > 0)')
  return subset_batch_indices(seed, step, num_meta, meta_batch_size, 'meta')


def subset_batch_indices(seed: int, step: int, size: int, batch_size: int,
                         stream: str) -> np.ndarray:
  """The int64 (batch_size,) positions in a set of `size` examples at step `step`.

  The meta stream's rule (module docstring) on the stream `stream` (a key of
  SUBSET_STREAMS: 'meta', 'labelled', 'unlabelled'), so batches drawn from the
  same set by different streams are independent. Raises ConfigError when
  `size` or `batch_size` is < 1.
  """
  if size < 1:
    raise ConfigError(f'the {stream} set is empty: no batch of {batch_size} can be drawn')
  if batch_size < 1:
    raise ConfigError(f'{stream}_batch_size={batch_size} must be >= 1')
  start = int(step) * batch_size
  stop = start + batch_size
  first, last = start // size, (stop - 1) // size
  stream_ids = np.concatenate([
      _permutation(int(seed), SUBSET_STREAMS[stream], cycle, int(size))
      for cycle in range(first, last + 1)])
  offset = start - first * size
  return stream_ids[offset:offset + batch_size].copy()
