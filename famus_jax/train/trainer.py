"""The training run: data, model, method, the compiled step, logging, checkpoints.

`train_and_evaluate(config, workdir, hooks)` is what `famus-train` / `main.py`
call, after `famus_jax.config_check.validate`. It resumes from the latest
checkpoint in the workdir when there is one (the checks of train/resume.py,
then `_resume_or_start`) and then runs the loop (`TrainingLoop`); batches are a pure
function of (seed, step), so a resumed run sees the same data as an
uninterrupted one.

Host transfers: every step copies only the finite flag and the method's
dispatch record to the host (`Run.run_step`); metrics, example weights and
batch indices stay on the device until the next log event, where they are
fetched together. Tools plug into this one loop as `Hook`s (e.g. the
meta-gradient quality tool); they never run a loop of their own.

The loop is polymorphic over the run object (`create_run`): a `Run` trains one
network; with config.meta_set='pseudo_clean' a `CoTrainedRun` trains two
co-trained networks (FaMUS supplement Alg. 2) through the same loop, the same
checkpoints and the same logs (train/run.py states the interface).
"""

import dataclasses
import os
import time
from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from famus_jax import catalogue
from famus_jax.cotrain.pair import co_trained
from famus_jax.data import build_data
from famus_jax.errors import (ConfigError, NonFiniteLossError, WorkdirLockedError,
                              WorkdirMismatchError)
from famus_jax.provenance import provenance
from famus_jax.train import distributed
from famus_jax.train.checkpoint import Checkpointer, WorkdirLock, run_fingerprint
from famus_jax.train.cotrain_run import CoTrainedRun
from famus_jax.train.logbook import MetricsLog, WindowMeans, write_json
from famus_jax.train.prefetch import BatchPrefetcher
from famus_jax.train.resume import (finished_summary, quarantine_damaged, restore_matching,
                                    warn_of_changes, write_run_records)
# Run and the loop's contract (StepResult, EpochEnd) live in train/run.py; the names that tools
# and tests use (Run, data_mesh, check_divisible) are importable from this module too.
from famus_jax.train.run import Run, StepResult, TrainingRun, check_divisible, data_mesh
from famus_jax.train.step import StepOutput


@dataclasses.dataclass
class Progress:
  """Host-side running record, saved with every checkpoint."""
  best_test_accuracy: float = 0.0
  last_test_accuracy: float = 0.0
  last_test_loss: float = float('nan')
  timed_steps: int = 0
  timed_seconds: float = 0.0
  compile_seconds: float = 0.0
  weight_sum_clean: float = 0.0
  weight_count_clean: int = 0
  weight_sum_noisy: float = 0.0
  weight_count_noisy: int = 0
  wall_seconds: float = 0.0  # wall-clock time of the training loops of every process so far
  resumes: int = 0  # how many times the run was resumed from a checkpoint

  @classmethod
  def from_record(cls, values: dict) -> 'Progress':
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


class Hook:
  """A tool that plugs into the training loop (e.g. `famus_jax.tools.quality`).

  Every method is optional. `before_step` sees the state the step starts
  from and the batch (the step has not run yet): what `run.batch(step)`
  returned (a dict for `Run`, a `PairBatch` for `CoTrainedRun`); `after_step`
  the StepResult.
  """

  def on_start(self, run: TrainingRun, state, start_step: int) -> None:
    del run, state, start_step

  def before_step(self, run: TrainingRun, step: int, state, batch) -> None:
    del run, step, state, batch

  def after_step(self, run: TrainingRun, step: int, result: StepResult) -> None:
    del run, step, result

  def on_end(self, run: TrainingRun, state, summary: dict) -> None:
    del run, state, summary


def _record_weights(progress: Progress, is_noisy: np.ndarray, indices, weights) -> None:
  noisy = is_noisy[np.asarray(indices)]
  w = np.asarray(weights, np.float64)
  progress.weight_sum_noisy += float(w[noisy].sum())
  progress.weight_count_noisy += int(noisy.sum())
  progress.weight_sum_clean += float(w[~noisy].sum())
  progress.weight_count_clean += int((~noisy).sum())


def _weights_event(run: TrainingRun, indices, example_weights, step: int) -> dict:
  """One batch's example weights (mean 1 over the batch) and which labels are wrong.

  Logged every `config.weights_log_every` steps; `famus_jax.tools.report` draws the
  clean-vs-mislabelled weight distributions from these (FaMUS Fig. 5).
  Event step = the number of finished steps when the batch was drawn.
  """
  idx = np.asarray(indices)
  return {'epoch': step / run.steps_per_epoch,
          'weights': np.round(np.asarray(example_weights, np.float64), 4),
          'noisy': run.is_noisy[idx].astype(np.int8)}


def summarise(run: TrainingRun, progress: Progress, step: int, wall_seconds: float) -> dict:
  """The run's summary.json; `wall_seconds` covers every process's training loop."""
  def mean(s, c):
    return s / c if c else None
  info = run.data.info
  return {
      'method': run.config.method, 'dataset': run.config.dataset, 'model': run.config.model,
      'steps': step, 'epochs': step / run.steps_per_epoch,
      'best_test_accuracy': progress.best_test_accuracy,
      'last_test_accuracy': progress.last_test_accuracy,
      'last_test_loss': progress.last_test_loss,
      'mean_step_time_s': mean(progress.timed_seconds, progress.timed_steps),
      'compile_time_s': progress.compile_seconds,
      'wall_time_s': wall_seconds,
      'resumes': progress.resumes,
      'realised_noise_rate': info['realised_noise_rate'],
      'num_train': run.num_train, 'num_meta': len(run.data.meta_labels),
      'mean_weight_clean': mean(progress.weight_sum_clean, progress.weight_count_clean),
      'mean_weight_noisy': mean(progress.weight_sum_noisy, progress.weight_count_noisy),
      'devices': [str(d) for d in jax.devices()],
      'processes': jax.process_count(),
      'provenance': provenance(),
  }


class PendingHostData:
  """Per-step device outputs held until the next log event, then fetched in one transfer.

  The clean / mislabelled weight statistics, the `weights` events and the
  window means are all built from these, in step order, when `flush` runs.
  """

  def __init__(self):
    self.items = []

  def add(self, step: int, output: StepOutput, indices) -> None:
    self.items.append((step, output.metrics, output.example_weights, indices))

  def flush(self, run: TrainingRun, progress: Progress, window: WindowMeans,
            log: MetricsLog) -> None:
    if not self.items:
      return
    items, self.items = distributed.host_copy(self.items), []  # every process, same steps
    every = run.config.weights_log_every
    for step, metrics, weights, indices in items:
      _record_weights(progress, run.is_noisy, indices, weights)
      if every and step % every == 0:
        log.write('weights', step, _weights_event(run, indices, weights, step))
      window.add(metrics)


def check_sizes(config, run: TrainingRun) -> None:
  """Size checks that need the data; they run before anything is written to the workdir."""
  if config.batch_size > run.num_train:
    raise ConfigError(f'config.batch_size={config.batch_size} is larger than the training set '
                      f'({run.num_train} examples after the meta split and subsetting)')
  if co_trained(config) and config.cotrain.min_pseudo_clean > run.num_train:
    raise ConfigError(f'config.cotrain.min_pseudo_clean={config.cotrain.min_pseudo_clean} is '
                      f'larger than the training set ({run.num_train} examples)')


def create_run(config, data, mesh, model=None) -> TrainingRun:
  """The run object the loop drives: a `CoTrainedRun` for the co-trained pair, else `Run`.

  The pair: meta_set='pseudo_clean' or method='dividemix' (`cotrain.pair.co_trained`).
  model: a Flax module instead of `config.model`'s (the Python API).
  """
  if co_trained(config):
    return CoTrainedRun(config, data, mesh, model=model)
  return Run(config, data, mesh, model=model)


def train_and_evaluate(config, workdir: str, hooks: Sequence[Hook] = (), data=None,
                       model=None) -> dict:
  """Train (resuming if a checkpoint exists), evaluate, write summary.json.

  config: one that `famus_jax.config_check.validate` accepts; the entry points (famus-train,
  the Python API, the tools) check it before they call this. Every other check (data, sizes,
  the workdir's lock, the run fingerprint against the saved checkpoint or records, checkpoint
  integrity) runs here before config.json, data_info.json or metrics.jsonl are touched.
  data: a `DataSplits` to train on instead of loading what the config names (the Python
  API's arrays); model: a Flax module instead of `config.model`'s.
  """
  distributed.initialize(config)  # before anything touches a device
  config = catalogue.with_update_period(config)  # records name the period the run trains with
  mesh = data_mesh()
  check_divisible(config, mesh.size)
  if data is None:
    data = build_data(config)
  if distributed.is_primary():
    print(f'Data: {data.info["source"]}')
  run = create_run(config, data, mesh, model=model)
  check_sizes(config, run)
  fingerprint = run_fingerprint(config, data)
  os.makedirs(workdir, exist_ok=True)
  lock = _lock_workdir(workdir)
  try:
    return _train_locked(config, workdir, hooks, run, data, fingerprint)
  finally:
    lock.release()


def _lock_workdir(workdir: str) -> WorkdirLock:
  """The workdir's lock, held by process 0 for the whole job; every process stops with
  WorkdirLockedError when process 0 could not take it."""
  lock, error = WorkdirLock(workdir), None
  if distributed.is_primary():
    try:
      lock.acquire()
    except WorkdirLockedError as e:
      error = e
  if not bool(distributed.agree(np.bool_(error is None))):
    raise error or WorkdirLockedError(
        f'{workdir} is in use by another famus_jax run: process 0 of this job could not take '
        f'its lock {lock.path}')
  return lock


def _silent(*args, **kwargs) -> None:
  del args, kwargs


def _train_locked(config, workdir, hooks, run, data, fingerprint) -> dict:
  """The run in its locked workdir: resume or start it, train it to the end, summarise it.

  Process 0 writes the run's files and talks; every process trains and checkpoints.
  """
  primary = distributed.is_primary()
  say = print if primary else _silent
  checkpointer = Checkpointer(workdir, config.keep_checkpoints)
  template = run.init_state()
  found, changes = restore_matching(config, workdir, checkpointer, template, fingerprint)
  finished = finished_summary(workdir, checkpointer, found, run.total_steps, say)
  if finished is not None:
    return finished

  # Every check passed: from here on the workdir is written.
  damaged = quarantine_damaged(checkpointer, found, say)
  warn_of_changes(changes, say)
  if primary:
    write_run_records(workdir, config, data, fingerprint)
  log = MetricsLog(workdir, active=primary, tensorboard=config.tensorboard)
  start, state, progress, window = _resume_or_start(run, data, checkpointer, log, found,
                                                    template, say)
  if changes or damaged:
    log.write('resume', start, {
        'changes': [[f, o, n] for f, o, n in changes],
        'damaged_checkpoints': [[s, cause] for s, cause in damaged]})
  for hook in hooks:
    hook.on_start(run, state, start)

  loop = TrainingLoop(run, hooks, checkpointer, log, fingerprint, progress, window, state,
                      start)
  loop.run_to_end()
  log.close()
  checkpointer.close()
  progress.wall_seconds = loop.wall_seconds()
  summary = summarise(run, progress, loop.step, progress.wall_seconds)
  for hook in hooks:
    hook.on_end(run, loop.state, summary)
  if primary:
    write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


# ---- resume: the state to start from -------------------------------------------------------

def _resume_or_start(run: TrainingRun, data, checkpointer: Checkpointer, log: MetricsLog,
                     found, template, say):
  """(start step, state, Progress, WindowMeans) to train from, with the metrics log set to it.

  Resumed: the restored checkpoint's, the log cut back to its step. Fresh: step 0 and the
  initial state, the log emptied and given the 'data' and 'method' events.
  """
  window = WindowMeans()
  if found is None:
    log.truncate_after(0)
    log.write('data', 0, data.info)
    log.write('method', 0, {'method': run.config.method, **run.method.describe()})
    return 0, template, Progress(), window
  start, state, saved, _ = found
  progress = Progress.from_record(saved['progress'])
  progress.resumes += 1
  window.restore(saved)
  if int(state.step) != start:
    raise WorkdirMismatchError(f'the checkpoint {checkpointer.step_path(start)} holds the '
                               f'state of step {int(state.step)}')
  log.truncate_after(start)
  say(f'Resumed from the checkpoint at step {start} in {checkpointer.directory}')
  return start, state, progress, window


# ---- the loop --------------------------------------------------------------------------------

class TrainingLoop:
  """The steps of a run from `start` to `run.total_steps`: logs, evaluations, checkpoints, hooks.

  `state` and `step` are the state the loop holds and the steps it has finished; a checkpoint
  saves them at any moment (at the schedule's steps, before a non-finite step's error, on
  Ctrl-C between steps). `progress` and `window` are the running records a checkpoint keeps.
  """

  def __init__(self, run: TrainingRun, hooks: Sequence[Hook], checkpointer: Checkpointer,
               log: MetricsLog, fingerprint: dict, progress: Progress, window: WindowMeans,
               state, start: int):
    self.run, self.config, self.hooks = run, run.config, hooks
    self.checkpointer, self.log, self.fingerprint = checkpointer, log, fingerprint
    self.progress, self.window, self.pending = progress, window, PendingHostData()
    self.state, self.start, self.step = state, start, start
    self.primary = distributed.is_primary()
    self.wall_base = progress.wall_seconds
    self.t_start = time.time()

  def wall_seconds(self) -> float:
    """Training-loop wall time of every process so far (the saved time when nothing trained)."""
    if self.step == self.start:  # nothing trained (finished run without a summary.json)
      return self.wall_base
    return self.wall_base + (time.time() - self.t_start)

  def save(self) -> None:
    """A checkpoint of `state` at `step`, with the records (pending host data flushed first)."""
    run, step = self.run, self.step
    self.pending.flush(run, self.progress, self.window, self.log)
    self.progress.wall_seconds = self.wall_base + (time.time() - self.t_start)
    self.checkpointer.save(step, self.state, {
        'progress': dataclasses.asdict(self.progress),
        **self.window.record(),
        'epoch': step // run.steps_per_epoch, 'step_in_epoch': step % run.steps_per_epoch,
        'fingerprint': self.fingerprint})

  def run_to_end(self) -> None:
    """Trains from `step` to `run.total_steps`.

    Ctrl-C saves a checkpoint first (a single process); a failure of another process of the
    job becomes DistributedError naming the last good checkpoint.
    """
    run, config = self.run, self.config
    bar = tqdm(total=run.total_steps, initial=self.start,
               disable=not (config.progress_bar and self.primary), desc=f'{config.method}',
               dynamic_ncols=True)
    batches = BatchPrefetcher(run.batch, run.steps_per_epoch, run.total_steps,
                              config.prefetch_batches)
    last_dispatch = None
    try:
      while self.step < run.total_steps:
        last_dispatch = self._train_step(batches.get(self.step), last_dispatch)
        self.step += 1
        bar.update(1)
        self._after_step(bar)
    except KeyboardInterrupt:
      # Ctrl-C between steps: keep everything done so far (one process only: in a job the
      # others would not join the save).
      if (jax.process_count() == 1
          and not any(x.is_deleted() for x in jax.tree.leaves(self.state))):
        self.save()
      raise
    except Exception as e:  # pylint: disable=broad-except
      if distributed.is_peer_failure(e):  # another process of the job died: stop, say how
        last = self.checkpointer.last_good_step
        raise distributed.lost_process_error(
            e, self.step, None if last is None else self.checkpointer.step_path(last)) from e
      raise
    finally:
      batches.close()
      bar.close()

  def _train_step(self, batch, last_dispatch):
    """One step on `batch` (hooks around it); its dispatch record. Saves and raises
    NonFiniteLossError when the loss or gradient is not finite."""
    run, step, progress = self.run, self.step, self.progress
    for hook in self.hooks:
      hook.before_step(run, step, self.state, batch)
    t0 = time.perf_counter()
    result = run.run_step(self.state, batch, last_dispatch)
    elapsed = time.perf_counter() - t0
    self.state = result.state
    if not result.finite:
      self.save()
      raise NonFiniteLossError(
          f'the training loss or gradient became NaN/inf at step {step + 1} '
          f'(method {self.config.method}, lr {float(run.lr_fn(step)):.4g}); the last good '
          f'state (step {step}) is saved in {self.checkpointer.directory}')
    if result.compiled:
      progress.compile_seconds += elapsed
    else:
      progress.timed_steps += 1
      progress.timed_seconds += elapsed
    self.pending.add(step, result.output, result.indices)
    for hook in self.hooks:
      hook.after_step(run, step, result)
    return result.dispatch

  def _after_step(self, bar) -> None:
    """What is due after `step` steps: the train log, the epoch's end, evaluation, checkpoint."""
    run, config, step = self.run, self.config, self.step
    if step % config.log_every == 0 or step == run.total_steps:
      self._log_window(bar)
    if step % run.steps_per_epoch == 0:
      self.state, events = run.on_epoch_end(self.state, step // run.steps_per_epoch)
      for event in events:
        self.log.write(event.name, step, event.values)
    if step % config.eval_every == 0 or step == run.total_steps:
      self._evaluate(bar)
    if step % config.checkpoint_every == 0 or step == run.total_steps:
      self.save()

  def _log_window(self, bar) -> None:
    """The 'train' event: the window's means of the step metrics."""
    self.pending.flush(self.run, self.progress, self.window, self.log)
    values = self.window.flush()
    values['epoch'] = self.step / self.run.steps_per_epoch
    self.log.write('train', self.step, values)
    bar.set_postfix(loss=f'{values["train_loss"]:.3f}', acc=f'{values["train_accuracy"]:.3f}',
                    refresh=False)

  def _evaluate(self, bar) -> None:
    """The 'eval' event: test accuracy and loss of `state` (and the training fit)."""
    progress = self.progress
    self.pending.flush(self.run, progress, self.window, self.log)
    scores = self.run.evaluate(self.state)
    progress.last_test_accuracy = scores['test_accuracy']
    progress.last_test_loss = scores['test_loss']
    progress.best_test_accuracy = max(progress.best_test_accuracy, scores['test_accuracy'])
    scores['train_time_s'] = progress.timed_seconds + progress.compile_seconds
    self.log.write('eval', self.step, scores)
    if self.primary:
      bar.write(f'step {self.step}: test accuracy {scores["test_accuracy"]:.4f} '
                f'(best {progress.best_test_accuracy:.4f})')
