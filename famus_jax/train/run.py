"""One training run's compiled functions and host-side helpers (`Run`), and what the loop reads.

The loop (`famus_jax.train.trainer`) drives any `TrainingRun`: `Run` trains
one network; `famus_jax.train.cotrain_run.CoTrainedRun` trains a co-trained
pair through the same interface (config.meta_set='pseudo_clean' or
method='dividemix'). A step's result is a `StepResult`, an epoch end's an
`EpochEnd` with the `LogEvent`s to write.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from famus_jax.data import DataSplits, batches
from famus_jax.errors import ConfigError
from famus_jax.method_registry import create_method
from famus_jax.methods.base import Method
from famus_jax.methods.preparation import BatchPreparation
from famus_jax.models import create_model
from famus_jax.train import distributed, schedules
from famus_jax.train.state import create_optimizer, create_train_state
from famus_jax.train.step import (StepOutput, fit_scores, make_eval_step, make_fit_step,
                                  make_train_step)


def data_mesh() -> Mesh:
  """The one-axis ('data') mesh over every device of every process (train/distributed.py)."""
  return distributed.global_mesh('data')


def check_divisible(config, num_devices: int) -> None:
  for field in ('batch_size', 'meta_batch_size', 'eval_batch_size'):
    value = config[field]
    if value % num_devices:
      raise ConfigError(f'config.{field}={value} is not divisible by the {num_devices} devices '
                        f'(data parallelism splits every batch evenly)')


@dataclasses.dataclass
class StepResult:
  """One step as the loop sees it.

  state: the new TrainState; output: the step's StepOutput, still on the
  device; dispatch: its dispatch record copied to the host (None for methods
  without one); finite: host bool; compiled: whether a variant was compiled
  for this step; reruns: how many times the step was re-run because the
  method's guess of the variant was wrong (0 or 1); indices: (n,) the
  training ids of the batch whose weights `output.example_weights` holds
  (device array; the clean / mislabelled weight statistics read it).
  """
  state: Any
  output: StepOutput
  dispatch: Any
  finite: bool
  compiled: bool
  reruns: int
  indices: Any = None


class LogEvent(NamedTuple):
  """An event the loop writes to metrics.jsonl at the current step: name and values."""
  name: str
  values: dict


class EpochEnd(NamedTuple):
  """What `on_epoch_end` returns: the new state and the events to log (e.g. 'division')."""
  state: Any
  events: tuple = ()


@runtime_checkable
class TrainingRun(Protocol):
  """What the training loop, its hooks and the Python API read of a run.

  config: the run's ConfigDict; data: its `DataSplits`; method: the `Method`
  (one instance for every network of the run); lr_fn: step -> () learning
  rate; steps_per_epoch, total_steps: the step schedule; num_train: N
  training examples; is_noisy: bool (N,) which given labels are wrong.

  init_state() -> the initial state pytree (what checkpoints hold);
  batch(step) -> the host- or device-side batch of `step` (a pure function of
  (seed, step)); run_step(state, batch, last_dispatch) -> `StepResult`, where
  last_dispatch is the previous `StepResult.dispatch` (None at the start);
  on_epoch_end(state, epoch) -> `EpochEnd` after `epoch` finished epochs;
  evaluate(state) -> {name: host number} with 'test_accuracy', 'test_loss'.
  """
  config: Any
  data: DataSplits
  method: Method
  lr_fn: Callable
  steps_per_epoch: int
  total_steps: int
  num_train: int
  is_noisy: np.ndarray

  def init_state(self) -> Any:
    ...

  def batch(self, step: int) -> Any:
    ...

  def run_step(self, state, batch, last_dispatch) -> 'StepResult':
    ...

  def on_epoch_end(self, state, epoch: int) -> 'EpochEnd':
    ...

  def evaluate(self, state) -> dict:
    ...


def fit_labels(config, data: DataSplits) -> Optional[np.ndarray]:
  """(N, 2) int32 [given label, true label] of the training set, or None.

  None when `config.eval_train_fit` is off, when some true labels are unknown
  (real label noise) or when no label is wrong: then no training-fit record
  is written at evaluation.
  """
  clean = np.asarray(data.train_clean_labels)
  if not config.eval_train_fit or (clean < 0).any() or not np.asarray(data.is_noisy).any():
    return None
  return np.stack([np.asarray(data.train_labels), clean], axis=1).astype(np.int32)


class Run:
  """One network's training run, a `TrainingRun`: its compiled functions and host-side helpers."""

  def __init__(self, config, data: DataSplits, mesh: Mesh,
               preparation: Optional[BatchPreparation] = None, model=None):
    """preparation: the batch preparation of the step (train/step.py; None: the augmented
    batch; a co-trained member's semi-supervised step, cotrain_run.py); model: a Flax module
    to train instead of the one `config.model` names (the Python API's own models:
    `famus_jax.api`)."""
    self.config, self.data, self.mesh = config, data, mesh
    self.preparation = preparation
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P('data'))
    self.num_train = data.num_train
    self.steps_per_epoch = batches.steps_per_epoch(self.num_train, config.batch_size)
    self.total_steps = config.num_steps or config.num_epochs * self.steps_per_epoch
    self.model = model if model is not None else create_model(config, data.num_classes)
    self.method = create_method(config)
    if (self.method.uses_meta_set and config.meta_set == 'clean'
        and len(data.meta_labels) == 0):
      raise ConfigError(f'config.method={config.method!r} needs a clean meta set: '
                        f'set config.num_meta > 0 (it is {config.num_meta})')
    self.lr_fn = schedules.as_float(schedules.create_lr_schedule(
        config.lr, self.steps_per_epoch, self.total_steps))
    self.tx = create_optimizer(config, self.lr_fn)
    self.mean, self.std = jnp.asarray(data.mean), jnp.asarray(data.std)
    self._steps = {}
    self._eval = jax.jit(make_eval_step(self.model, self.mean, self.std))
    self._fit = jax.jit(make_fit_step(self.model, self.mean, self.std))
    self.is_noisy = np.asarray(data.is_noisy)
    self.fit_labels = fit_labels(config, data)

  def init_state(self, seed: Optional[int] = None):
    """The initial TrainState from `seed` (default config.seed): init, keys, method state."""
    seed = self.config.seed if seed is None else seed
    state = create_train_state(jax.random.PRNGKey(seed), self.model, self.method,
                               self.tx, self.data.train_images.shape[1:], self.num_train)
    # Host-side start hook (FSR's initial dictionary); a resumed run overwrites it on restore.
    state = state.replace(method_state=self.method.on_train_start(state.method_state, self.data))
    return distributed.replicate(state, self.replicated)  # process 0's values in every process

  def step_fn(self, variant):
    """The compiled step for a method variant (compiled once, on first use)."""
    if variant not in self._steps:
      method = self.method.variants.specialise(self.method, variant)
      step = make_train_step(self.model, method, self.tx, self.lr_fn, self.config.augment,
                             self.mean, self.std, self.data.num_classes,
                             self.config.meta_bn_train_mode, preparation=self.preparation)
      donate = () if self.method.variants.speculative else (0,)
      # The new state and the step's outputs are replicated (every process can read them).
      self._steps[variant] = jax.jit(step, donate_argnums=donate, out_shardings=self.replicated)
    return self._steps[variant]

  def run_step(self, state, batch, last_dispatch) -> StepResult:
    """One step in the variant `method.variants` chooses from `last_dispatch`; re-run if refused.

    Re-runs the step when a speculative policy refuses the variant that ran
    (`StepVariants.accepts`); both runs count towards the step's time. The
    dispatch record and the finite flag the host acts on are process 0's in
    every process (`distributed.agree`), so all processes run the same variants.
    """
    variants = self.method.variants
    step = distributed.host_scalar(state.step) if variants.needs_step else None
    variant = variants.choose(last_dispatch, step)
    compiled = variant not in self._steps
    new_state, out = self.step_fn(variant)(state, batch)
    dispatch, finite = distributed.agree((out.dispatch, out.finite))
    reruns = 0
    if dispatch is not None and not variants.accepts(variant, dispatch):
      variant = variants.choose(dispatch, step)
      compiled |= variant not in self._steps
      new_state, out = self.step_fn(variant)(state, batch)
      dispatch, finite = distributed.agree((out.dispatch, out.finite))
      reruns = 1
    return StepResult(new_state, out, dispatch, bool(finite), compiled, reruns, batch['index'])

  def batch(self, step: int) -> dict:
    """The global batch of `step` (the step dict of train/step.py), sharded over the mesh.

    The ids are a pure function of (seed, step); each process reads the images of its own
    rows only (`distributed.global_batch`).
    """
    cfg, data = self.config, self.data
    idx = batches.train_batch_indices(cfg.seed, step, self.num_train, cfg.batch_size)
    out = distributed.global_batch(self.sharded, len(idx), lambda rows: {
        'image': data.train_images[idx[rows]],
        'label': data.train_labels[idx[rows]].astype(np.int32),
        'index': idx[rows].astype(np.int32)})
    if self.method.uses_meta_set:
      midx = batches.meta_batch_indices(cfg.seed, step, len(data.meta_labels), cfg.meta_batch_size)
      out.update(distributed.global_batch(self.sharded, len(midx), lambda rows: {
          'meta_image': data.meta_images[midx[rows]],
          'meta_label': data.meta_labels[midx[rows]].astype(np.int32)}))
    return out

  def on_epoch_end(self, state, epoch: int) -> EpochEnd:
    """Host-side work between epochs (the method's hook: FSR refreshes its dictionary).

    epoch: the number of finished epochs. Returns the new state and no events. What the
    hook changed holds process 0's values in every process (`distributed.replicate_changed`).
    """
    method_state = self.method.on_epoch_end(state.method_state, epoch, self.data)
    method_state = distributed.replicate_changed(method_state, state.method_state,
                                                 self.replicated)
    return EpochEnd(state.replace(method_state=method_state), ())

  def evaluate(self, state) -> dict:
    """Top-1 accuracy and mean loss on the test set, and the training fit (`train_fit`)."""
    totals = self.test_sums(lambda images, labels, mask: self._eval(
        state.params, state.batch_stats, images, labels, mask))
    return {'test_accuracy': totals['correct'] / max(totals['count'], 1),
            'test_loss': totals['loss_sum'] / max(totals['count'], 1),
            **self.train_fit(lambda images, labels, mask: self._fit(
                state.params, state.batch_stats, images, labels, mask))}

  def train_fit(self, sums_fn: Callable) -> dict:
    """`step.fit_scores` of `sums_fn(images, labels (n, 2), mask)` over the training set.

    The memorisation record of every evaluation: how many mislabelled training
    examples the network predicts as their wrong given label. {} when
    `fit_labels` is None.
    """
    if self.fit_labels is None:
      return {}
    return fit_scores(self.dataset_sums(self.data.train_images, self.fit_labels, sums_fn))

  def padded_batches(self, images: np.ndarray, labels: np.ndarray):
    """Yields (real count, device (images, labels, mask)) of eval_batch_size batches.

    The last batch is padded with zeros; `mask` (bool (eval_batch_size,)) marks its real
    examples. Used for the test set and for the co-trained pair's loss pass. Each process
    reads the rows of its own devices only (`distributed.global_batch`).
    """
    bs = self.config.eval_batch_size
    for start in range(0, len(labels), bs):
      real = min(bs, len(labels) - start)

      def load(rows, start=start, real=real):
        lo, count = start + rows.start, rows.stop - rows.start
        hi = max(lo, min(start + rows.stop, start + real))
        x, y = images[lo:hi], labels[lo:hi].astype(np.int32)
        if len(y) < count:
          x = np.concatenate([x, np.zeros((count - len(y),) + x.shape[1:], x.dtype)])
          y = np.concatenate([y, np.zeros((count - len(y),) + y.shape[1:], np.int32)])
        return x, y, np.arange(lo, lo + count) < start + real

      yield real, distributed.global_batch(self.sharded, bs, load)

  def test_sums(self, sums_fn: Callable) -> dict:
    """Sums of `sums_fn(images, labels, mask) -> {name: ()}` over the test set
    (`padded_batches`). Returns {name: host float or int}.
    """
    return self.dataset_sums(self.data.test_images, self.data.test_labels, sums_fn)

  def dataset_sums(self, images, labels: np.ndarray, sums_fn: Callable) -> dict:
    """Sums of `sums_fn(images, labels, mask) -> {name: ()}` over `padded_batches`."""
    totals = {}
    for _, args in self.padded_batches(images, labels):
      for key, value in sums_fn(*args).items():
        totals[key] = totals.get(key, 0) + np.asarray(value).item()
    return totals
