"""Batches built ahead on a host thread (train/prefetch.py): the same run, bit for bit."""

import threading

import jax
import numpy as np
import pytest

from famus_jax.presets import tiny
from famus_jax.train import trainer
from famus_jax.train.prefetch import BatchPrefetcher


class Recorder:
  """A make_batch that records which steps it built, in which thread, after which epochs."""

  def __init__(self, steps_per_epoch: int, fail_at: int = -1):
    self.built, self.epochs_done = [], 0
    self.steps_per_epoch, self.fail_at = steps_per_epoch, fail_at

  def __call__(self, step: int):
    if step == self.fail_at:
      raise OSError(f'damaged image file for step {step}')
    self.built.append((step, threading.current_thread() is threading.main_thread(),
                       self.epochs_done))
    return {'step': step}


def drive(recorder: Recorder, prefetcher: BatchPrefetcher, start: int, total: int) -> list:
  """The training loop's use: get(step), then the epoch's end after its last step."""
  got = []
  for step in range(start, total):
    got.append(prefetcher.get(step)['step'])
    if (step + 1) % recorder.steps_per_epoch == 0:
      recorder.epochs_done += 1
  prefetcher.close()
  return got


@pytest.mark.parametrize('depth', [0, 1, 3])
def test_every_batch_once_in_order_never_across_an_epoch_end(depth):
  recorder = Recorder(steps_per_epoch=4)
  got = drive(recorder, BatchPrefetcher(recorder, 4, 10, depth), start=1, total=10)
  assert got == list(range(1, 10))
  assert [s for s, _, _ in recorder.built] == list(range(1, 10))  # built once each, in order
  for step, in_main, epochs_done in recorder.built:
    assert epochs_done == step // 4, step  # after the previous epoch's end, before its own
    # Without prefetching every batch is built when needed; with it, all but the first of
    # each epoch (and the first step of the run) come from the worker thread.
    assert in_main == (depth == 0 or step % 4 == 0 or step == 1), step


def test_an_error_building_a_batch_is_raised_at_its_step():
  recorder = Recorder(steps_per_epoch=8, fail_at=3)
  prefetcher = BatchPrefetcher(recorder, 8, 8, 1)
  for step in range(3):
    prefetcher.get(step)
  with pytest.raises(OSError, match='damaged image file for step 3'):
    prefetcher.get(3)
  prefetcher.close()


class ReadThreads(trainer.Hook):
  """Records the thread of every read of the training images and the final params."""

  def __init__(self):
    self.threads, self.params = [], None

  def on_start(self, run, state, start_step):
    images, threads = run.data.train_images, self.threads

    class Images:
      shape, dtype = images.shape, images.dtype

      def __getitem__(self, key):
        threads.append(threading.current_thread() is threading.main_thread())
        return images[key]

    run.data.train_images = Images()

  def on_end(self, run, state, summary):
    self.params = jax.device_get(state.params)


def test_prefetching_trains_the_same_bits(tmp_path):
  runs = {}
  for depth in (0, 1):
    config = tiny.get_config()
    config.method = 'mwnet'
    config.prefetch_batches = depth
    hook = ReadThreads()
    trainer.train_and_evaluate(config, str(tmp_path / f'depth{depth}'), [hook])
    runs[depth] = hook
  assert all(runs[0].threads) and not all(runs[1].threads)  # the worker read with depth 1
  for a, b in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)):
    np.testing.assert_array_equal(a, b)
