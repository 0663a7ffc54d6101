"""Assembling the next training batch on a host thread while the current step runs.

`Run.batch(step)` is a pure function of the step (the ids come from (seed,
step); the images are read, decoded and copied to the devices), so it can be
computed ahead without changing what is trained: the batches, their order and
every bit of the run are the same with and without prefetching. What it saves
is the host time of a batch (decoding image files above all, `data/image_folder.py`),
which then overlaps with the device's step instead of adding to it.

One worker thread builds the batches in step order, so a data source sees the
same sequence of reads as without prefetching. A batch is never built across an
epoch boundary ahead of time: the host's work between epochs (`on_epoch_end`:
the co-trained pair's division, FSR's dictionary) may change what the next
epoch's batches hold. An error raised while building a batch (a damaged image
file) is raised in the training loop, at the step that needed the batch.
"""

import concurrent.futures
from typing import Any, Callable, Optional


class BatchPrefetcher:
  """`get(step)` returns `make_batch(step)`, built ahead on a worker thread where allowed.

  make_batch: step -> batch (the run's `batch`). steps_per_epoch: batches of an
  epoch (none is built ahead across an epoch's end). total_steps: the run's
  last step + 1. depth: how many batches may be built ahead (0 = none: `get`
  builds each batch in the calling thread).
  """

  def __init__(self, make_batch: Callable[[int], Any], steps_per_epoch: int, total_steps: int,
               depth: int):
    self.make_batch, self.depth = make_batch, depth
    self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
    self.pending = {}  # step -> Future of its batch
    self.pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    if depth > 0:
      self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='famus-batches')

  def ahead_allowed(self, step: int, after: int) -> bool:
    """May `step`'s batch be built while the step `after` has not finished?"""
    same_epoch = step // self.steps_per_epoch == after // self.steps_per_epoch
    return step < self.total_steps and same_epoch

  def get(self, step: int):
    """The batch of `step`; then starts building the next ones of the same epoch."""
    future = self.pending.pop(step, None)
    batch = future.result() if future is not None else self.make_batch(step)
    for ahead in range(step + 1, step + 1 + self.depth):
      if not self.ahead_allowed(ahead, step):
        break
      if ahead not in self.pending:
        self.pending[ahead] = self.pool.submit(self.make_batch, ahead)
    return batch

  def close(self) -> None:
    """Drops the batches built ahead and stops the worker thread."""
    for future in self.pending.values():
      future.cancel()
    self.pending.clear()
    if self.pool is not None:
      self.pool.shutdown(wait=True)
