"""The training run: data, model, method, the compiled step, logging, checkpoints.

`train_and_evaluate(config, workdir)` is what `main.py` calls. It resumes from
the latest checkpoint in the workdir when there is one; batches are a pure
function of (seed, step), so a resumed run sees the same data as an
uninterrupted one.
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from famus_jax import config_check
from famus_jax.data import DataSplits, batches, build_data
from famus_jax.errors import ConfigError, NonFiniteLossError
from famus_jax.methods import create_method
from famus_jax.models import create_model
from famus_jax.train import schedules
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.logbook import MetricsLog, WindowMeans, write_json
from famus_jax.train.state import create_optimizer, create_train_state
from famus_jax.train.step import make_eval_step, make_train_step


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


def data_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def check_divisible(config, num_devices: int) -> None:
  for field in ('batch_size', 'meta_batch_size', 'eval_batch_size'):
    value = config[field]
    if value % num_devices:
      raise ConfigError(f'config.{field}={value} is not divisible by the {num_devices} devices '
                        f'(data parallelism splits every batch evenly)')


class Run:
  """One training run's compiled functions and host-side helpers."""

  def __init__(self, config, data: DataSplits, mesh: Mesh):
    self.config, self.data, self.mesh = config, data, mesh
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P('data'))
    self.num_train = len(data.train_labels)
    self.steps_per_epoch = batches.steps_per_epoch(self.num_train, config.batch_size)
    self.total_steps = config.num_steps or config.num_epochs * self.steps_per_epoch
    self.model = create_model(config, data.num_classes)
    self.method = create_method(config)
    if self.method.uses_meta_set and len(data.meta_labels) == 0:
      raise ConfigError(f'config.method={config.method!r} needs a clean meta set: '
                        f'set config.num_meta > 0 (it is {config.num_meta})')
    self.lr_fn = schedules.as_float(schedules.create_lr_schedule(
        config.lr, self.steps_per_epoch, self.total_steps))
    self.tx = create_optimizer(config, self.lr_fn)
    self.mean, self.std = jnp.asarray(data.mean), jnp.asarray(data.std)
    self._steps = {}
    self._eval = jax.jit(make_eval_step(self.model, self.mean, self.std))
    self.is_noisy = np.asarray(data.train_labels != data.train_clean_labels)

  def init_state(self):
    state = create_train_state(jax.random.PRNGKey(self.config.seed), self.model, self.method,
                               self.tx, self.data.train_images.shape[1:], self.num_train)
    # Host-side start hook (FSR's initial dictionary); a resumed run overwrites it on restore.
    state = state.replace(method_state=self.method.on_train_start(state.method_state, self.data))
    return jax.device_put(state, self.replicated)

  def step_fn(self, variant):
    """The compiled step for a method variant (compiled once, on first use)."""
    if variant not in self._steps:
      method = self.method.static_variant(variant)
      step = make_train_step(self.model, method, self.tx, self.lr_fn, self.config.augment,
                             self.mean, self.std, self.data.num_classes,
                             self.config.meta_bn_train_mode)
      donate = () if self.method.speculative else (0,)
      self._steps[variant] = jax.jit(step, donate_argnums=donate)
    return self._steps[variant]

  def run_step(self, state, batch, last_host):
    """(new state, host metrics, whether a variant was compiled) for one step.

    Re-runs the step when a speculative method's guess of the variant was
    wrong (`Method.accepts`); both runs count towards the step's time.
    """
    variant = self.method.variant(last_host)
    compiled = variant not in self._steps
    new_state, metrics = self.step_fn(variant)(state, batch)
    metrics = jax.device_get(metrics)
    if not self.method.accepts(variant, metrics):
      variant = self.method.variant(metrics)
      compiled |= variant not in self._steps
      new_state, metrics = self.step_fn(variant)(state, batch)
      metrics = jax.device_get(metrics)
    return new_state, metrics, compiled

  def batch(self, step: int) -> dict:
    cfg, data = self.config, self.data
    idx = batches.train_batch_indices(cfg.seed, step, self.num_train, cfg.batch_size)
    out = {'image': data.train_images[idx], 'label': data.train_labels[idx].astype(np.int32),
           'index': idx.astype(np.int32)}
    if self.method.uses_meta_set:
      midx = batches.meta_batch_indices(cfg.seed, step, len(data.meta_labels), cfg.meta_batch_size)
      out['meta_image'] = data.meta_images[midx]
      out['meta_label'] = data.meta_labels[midx].astype(np.int32)
    return jax.device_put(out, self.sharded)

  def evaluate(self, state) -> dict:
    """Top-1 accuracy and mean loss on the test set."""
    data, bs = self.data, self.config.eval_batch_size
    totals = {'correct': 0, 'loss_sum': 0.0, 'count': 0}
    n = len(data.test_labels)
    for start in range(0, n, bs):
      images = data.test_images[start:start + bs]
      labels = data.test_labels[start:start + bs].astype(np.int32)
      real = len(labels)
      mask = np.zeros(bs, bool)
      mask[:real] = True
      if real < bs:
        images = np.concatenate([images, np.zeros((bs - real,) + images.shape[1:], images.dtype)])
        labels = np.concatenate([labels, np.zeros(bs - real, np.int32)])
      args = jax.device_put((images, labels, mask), self.sharded)
      sums = self._eval(state.params, state.batch_stats, *args)
      for key in totals:
        totals[key] += np.asarray(sums[key]).item()
    return {'test_accuracy': totals['correct'] / max(totals['count'], 1),
            'test_loss': totals['loss_sum'] / max(totals['count'], 1)}


def _record_weights(progress: Progress, is_noisy: np.ndarray, indices, weights) -> None:
  noisy = is_noisy[np.asarray(indices)]
  w = np.asarray(weights, np.float64)
  progress.weight_sum_noisy += float(w[noisy].sum())
  progress.weight_count_noisy += int(noisy.sum())
  progress.weight_sum_clean += float(w[~noisy].sum())
  progress.weight_count_clean += int((~noisy).sum())


def _weights_event(run: Run, indices, metrics: dict, step: int) -> dict:
  """One batch's example weights (mean 1 over the batch) and which labels are wrong.

  Logged every `config.weights_log_every` steps; `famus_jax.report` draws the
  clean-vs-mislabelled weight distributions from these (FaMUS Fig. 5).
  Event step = the number of finished steps when the batch was drawn.
  """
  idx = np.asarray(indices)
  return {'epoch': step / run.steps_per_epoch,
          'weights': np.round(np.asarray(metrics['example_weights'], np.float64), 4),
          'noisy': run.is_noisy[idx].astype(np.int8)}


def summarise(run: Run, progress: Progress, step: int, wall_seconds: float) -> dict:
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
      'realised_noise_rate': info['realised_noise_rate'],
      'num_train': run.num_train, 'num_meta': len(run.data.meta_labels),
      'mean_weight_clean': mean(progress.weight_sum_clean, progress.weight_count_clean),
      'mean_weight_noisy': mean(progress.weight_sum_noisy, progress.weight_count_noisy),
      'devices': [str(d) for d in jax.devices()],
  }


def train_and_evaluate(config, workdir: str) -> dict:
  """Train (resuming if a checkpoint exists), evaluate, write summary.json."""
  config_check.validate(config)
  mesh = data_mesh()
  check_divisible(config, mesh.size)
  os.makedirs(workdir, exist_ok=True)
  data = build_data(config)
  run = Run(config, data, mesh)
  write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  write_json(os.path.join(workdir, 'data_info.json'), data.info)

  checkpointer = Checkpointer(workdir, config.keep_checkpoints)
  log = MetricsLog(workdir)
  state = run.init_state()
  progress = Progress()
  window = WindowMeans()
  start = 0
  if checkpointer.latest_step() is not None:
    state, saved = checkpointer.restore(state)
    progress = Progress(**saved['progress'])
    window.sums, window.count = saved['window_sums'], saved['window_count']
    start = int(state.step)
    log.truncate_after(start)
    print(f'Resumed from the checkpoint at step {start} in {checkpointer.directory}')
  else:
    log.truncate_after(0)
    log.write('data', 0, data.info)
    log.write('method', 0, {'method': config.method, **run.method.describe()})

  def save(step_now):
    checkpointer.save(step_now, state, {'progress': dataclasses.asdict(progress),
                                        'window_sums': window.sums, 'window_count': window.count,
                                        'epoch': step_now // run.steps_per_epoch,
                                        'step_in_epoch': step_now % run.steps_per_epoch})

  t_start = time.time()
  last_host = None
  bar = tqdm(total=run.total_steps, initial=start, disable=not config.progress_bar,
             desc=f'{config.method}', dynamic_ncols=True)
  step = start
  try:
    while step < run.total_steps:
      batch = run.batch(step)
      t0 = time.perf_counter()
      state, metrics, first_call = run.run_step(state, batch, last_host)
      elapsed = time.perf_counter() - t0
      if not bool(metrics['finite']):
        save(step)
        raise NonFiniteLossError(
            f'the training loss or gradient became NaN/inf at step {step + 1} '
            f'(method {config.method}, lr {float(metrics["lr"]):.4g}); the last good state '
            f'(step {step}) is saved in {checkpointer.directory}')
      if first_call:
        progress.compile_seconds += elapsed
      else:
        progress.timed_steps += 1
        progress.timed_seconds += elapsed
      _record_weights(progress, run.is_noisy, batch['index'], metrics['example_weights'])
      if config.weights_log_every and step % config.weights_log_every == 0:
        log.write('weights', step, _weights_event(run, batch['index'], metrics, step))
      last_host = metrics
      window.add(metrics)
      step += 1
      bar.update(1)
      if step % config.log_every == 0 or step == run.total_steps:
        values = window.flush()
        values['epoch'] = step / run.steps_per_epoch
        log.write('train', step, values)
        bar.set_postfix(loss=f'{values["train_loss"]:.3f}', acc=f'{values["train_accuracy"]:.3f}',
                        refresh=False)
      if step % run.steps_per_epoch == 0:
        state = state.replace(method_state=run.method.on_epoch_end(
            state.method_state, step // run.steps_per_epoch, run.data))
      if step % config.eval_every == 0 or step == run.total_steps:
        result = run.evaluate(state)
        progress.last_test_accuracy = result['test_accuracy']
        progress.last_test_loss = result['test_loss']
        progress.best_test_accuracy = max(progress.best_test_accuracy, result['test_accuracy'])
        result['train_time_s'] = progress.timed_seconds + progress.compile_seconds
        log.write('eval', step, result)
        bar.write(f'step {step}: test accuracy {result["test_accuracy"]:.4f} '
                  f'(best {progress.best_test_accuracy:.4f})')
      if step % config.checkpoint_every == 0 or step == run.total_steps:
        save(step)
  except KeyboardInterrupt:
    if not any(x.is_deleted() for x in jax.tree.leaves(state)):
      save(step)  # Ctrl-C between steps: keep everything done so far.
    raise
  finally:
    bar.close()
  checkpointer.close()
  summary = summarise(run, progress, step, time.time() - t_start)
  write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary
