"""Multi-process data parallelism (train/distributed.py), tested with local processes.

The processes started here are a real JAX multi-controller job: `jax.distributed` on
localhost, gloo collectives between CPU processes, one CPU device per process. They are
compared with one process (one device) training the same global batches:

- famus (on MW-Net) and fsr on a tiny synthetic run of two epochs (FSR's dictionary refresh,
  FaMUS's variant dispatch with a re-run): every process ends with the same parameters, equal
  to the single-process run's within float tolerance; each process read the images of its own
  rows of every batch only; both ran FaMUS's variants as one process does; metrics.jsonl holds
  each event once;
- erm through the README's command: a SIGKILL of one process stops the other at once with
  DistributedError, the rerun resumes from the last checkpoint and ends with the single-
  process run's parameters;
- four processes (mwnet: the training and the meta batch both split four ways) against the
  same single-process run;
- the config checks and the single-process identities of the helpers.

Every process compiles at XLA's cheapest optimisation level (`child_env`; compiling is most of
the time here). Run as a script (`python tests/test_multiprocess.py child ...`) this file is
one process of such a job (`child_main`).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from famus_jax import config_check
from famus_jax.data import batches, build_data
from famus_jax.errors import ConfigError
from famus_jax.presets import tiny
from famus_jax.train import distributed, trainer
from famus_jax.train.checkpoint import run_fingerprint
from famus_jax.train.logbook import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ('erm', 'mwnet', 'famus', 'fsr')
# ERM's two-process run is the SIGKILL test's (README command), MW-Net's multi-process run the
# four-process test's; FaMUS on MW-Net covers the meta step in the two-process job.
JOB_METHODS = ('famus', 'fsr')
# Two epochs of 8 steps (168 synthetic images - 40 meta = 128 = 8 batches of 16).
COMMON = {'num_steps': 16, 'synthetic.num_train': 168, 'log_every': 4, 'eval_every': 8,
          'checkpoint_every': 8, 'weights_log_every': 4}
PER_METHOD = {
    # ERM also runs in the SIGKILL test: long enough that the kill lands before the end.
    'erm': {'num_steps': 48, 'checkpoint_every': 4, 'eval_every': 24},
    'fsr': {'fsr.dictionary_size': 40, 'fsr.reward_batch_size': 16, 'fsr.warmup_epochs': 1},
}
TIMEOUT_S = 900  # a loaded CI core: the jobs usually take well under a minute


def overrides_for(method: str) -> dict:
  return {**COMMON, 'method': method, **PER_METHOD.get(method, {})}


def make_config(overrides: dict, distributed_fields: dict = None):
  config = tiny.get_config()
  config.update_from_flattened_dict(overrides)
  config.update_from_flattened_dict({f'distributed.{k}': v
                                     for k, v in (distributed_fields or {}).items()})
  return config


def flat(tree) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


class RecordingImages:
  """Training images that record the ids each read asked for: `Run.batch`'s (b,) batch ids in
  `reads`, FSR's (C, k) dictionary refreshes in `dictionary_reads`, the evaluation's passes
  over the training set (the training fit) as [start, stop) row ranges in `range_reads`. No
  __array__: reading the whole set (np.asarray of it) fails."""

  def __init__(self, images):
    self.images, self.reads, self.dictionary_reads, self.range_reads = images, [], [], []
    self.shape, self.dtype = images.shape, images.dtype

  def __getitem__(self, key):
    if isinstance(key, slice):
      self.range_reads.append([key.start, key.stop])
      return self.images[key]
    key = np.asarray(key)
    (self.dictionary_reads if key.ndim == 2 else self.reads).append(key.tolist())
    return self.images[key]

  def __len__(self):
    return len(self.images)


class RecordRun(trainer.Hook):
  """Writes the final params (params_p<i>.npz), the training ids each batch read and the
  compiled variants each step ran, with re-runs (record_p<i>.json)."""

  def __init__(self, directory: str):
    self.directory = directory
    self.images, self.variants = None, []

  def on_start(self, run, state, start_step):
    self.images = RecordingImages(run.data.train_images)
    run.data.train_images = self.images

  def after_step(self, run, step, result):
    if result.dispatch is not None:  # FaMUS
      self.variants.append([int(result.dispatch.bucket_run), result.reruns])

  def on_end(self, run, state, summary):
    index = jax.process_index()
    np.savez(os.path.join(self.directory, f'params_p{index}.npz'), **flat(state.params))
    with open(os.path.join(self.directory, f'record_p{index}.json'), 'w') as f:
      json.dump({'reads': self.images.reads, 'dictionary_reads': self.images.dictionary_reads,
                 'range_reads': self.images.range_reads, 'variants': self.variants}, f)


def child_main(argv) -> None:
  """One process of a job: trains each method of argv in turn, in its own workdir."""
  root, coordinator, num_processes, process_id, methods = argv
  for method in json.loads(methods):
    workdir = os.path.join(root, method)
    os.makedirs(workdir, exist_ok=True)
    config = make_config(overrides_for(method), {
        'num_processes': int(num_processes), 'process_id': int(process_id),
        'coordinator_address': coordinator})
    trainer.train_and_evaluate(config, workdir, [RecordRun(workdir)])
  print('child done', flush=True)


# ---- launching local processes ----------------------------------------------------------------
def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def child_env(cache_dir) -> dict:
  """Every process of this file (jobs and the single-process reference alike): one CPU
  device, XLA's cheapest optimisation level (compiling is most of the time), a compilation
  cache shared by the jobs (a rerun loads what the first run compiled)."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             XLA_FLAGS='--xla_backend_optimization_level=0'
             ' --xla_llvm_disable_expensive_passes=true')
  return env


def start(args_of, num_processes: int, log_dir, tag: str, cache_dir) -> list:
  """Starts `num_processes` processes; args_of(i) is process i's command line."""
  procs = []
  for i in range(num_processes):
    out = open(os.path.join(log_dir, f'{tag}_p{i}.log'), 'w')  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(args_of(i), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                  env=child_env(cache_dir)))
  return procs


def log_of(log_dir, tag: str, i: int) -> str:
  with open(os.path.join(log_dir, f'{tag}_p{i}.log')) as f:
    return f.read()


def stop(procs) -> None:
  """SIGKILLs the processes (of those started here) that are still running."""
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def wait_all(procs, log_dir, tag: str) -> None:
  """Waits for every process to exit with status 0 (stops them all on a failure)."""
  deadline = time.time() + TIMEOUT_S
  try:
    for i, proc in enumerate(procs):
      rc = proc.wait(timeout=max(1, deadline - time.time()))
      assert rc == 0, f'process {i} failed ({rc}):\n{log_of(log_dir, tag, i)[-4000:]}'
  finally:
    stop(procs)


def start_job(root, num_processes: int, methods, cache_dir, tag: str = 'job') -> list:
  """A job of `num_processes` (1: the single-process reference) running `child_main`."""
  coordinator = f'localhost:{free_port()}'
  return start(lambda i: [sys.executable, os.path.abspath(__file__), 'child', str(root),
                          coordinator, str(num_processes), str(i), json.dumps(list(methods))],
               num_processes, root, tag, cache_dir)


class Runs(NamedTuple):
  """jobs: the two-process job's root (a workdir per method of JOB_METHODS); one_process:
  the single-process runs' root (every method); reference: {method: final params (flat)};
  cache: the compilation cache of the jobs."""
  jobs: Any
  one_process: Any
  reference: dict
  cache: Any


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> Runs:
  """The two-process job and, at the same time, one process training every method."""
  root, cache = tmp_path_factory.mktemp('two_processes'), tmp_path_factory.mktemp('cache')
  alone = tmp_path_factory.mktemp('one_process')
  procs = start_job(root, 2, JOB_METHODS, cache) + start_job(alone, 1, METHODS, cache, 'alone')
  try:
    wait_all(procs[2:], alone, 'alone')
    wait_all(procs[:2], root, 'job')
  finally:
    stop(procs)
  reference = {m: dict(np.load(alone / m / 'params_p0.npz')) for m in METHODS}
  return Runs(root, alone, reference, cache)


def assert_params_close(params: dict, reference: dict, what: str) -> None:
  assert sorted(params) == sorted(reference), what
  for name, value in reference.items():
    np.testing.assert_allclose(params[name], value, rtol=2e-4, atol=2e-6,
                               err_msg=f'{what}: {name}')


# ---- the job against one process ----------------------------------------------------------------
@pytest.mark.parametrize('method', JOB_METHODS)
def test_two_processes_train_what_one_process_trains(runs, method):
  workdir = runs.jobs / method
  p0 = dict(np.load(workdir / 'params_p0.npz'))
  p1 = dict(np.load(workdir / 'params_p1.npz'))
  for name in p0:  # every process holds the same replicated state, bit for bit
    np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
  assert_params_close(p0, runs.reference[method], f'{method}, 2 processes vs 1')

  # Each process read the images of its own half of every global batch, nothing else.
  cfg = make_config(overrides_for(method))
  num_train = cfg.synthetic.num_train - cfg.num_meta
  records = [json.loads((workdir / f'record_p{i}.json').read_text()) for i in range(2)]
  half = cfg.batch_size // 2
  for step in range(cfg.num_steps):
    ids = batches.train_batch_indices(cfg.seed, step, num_train, cfg.batch_size).tolist()
    assert records[0]['reads'][step] == ids[:half], step
    assert records[1]['reads'][step] == ids[half:], step
  assert len(records[0]['reads']) == len(records[1]['reads']) == cfg.num_steps
  # The training-fit passes of the evaluations: each process reads rows of its own, together
  # every training row once per evaluation.
  rows = [set(r for lo, hi in records[i]['range_reads'] for r in range(lo, hi)) for i in range(2)]
  assert not rows[0] & rows[1]
  assert rows[0] | rows[1] == set(range(num_train))
  # FSR's dictionary refreshes read only the dictionary's (C, k) images, the same on both.
  dictionaries = records[0]['dictionary_reads']
  assert dictionaries == records[1]['dictionary_reads']
  epochs = cfg.num_steps // (num_train // cfg.batch_size)  # one refresh at each epoch's end
  assert len(dictionaries) == (epochs if method == 'fsr' else 0)
  classes = cfg.synthetic.num_classes
  for ids in dictionaries:
    assert np.asarray(ids).shape == (classes, cfg.fsr.dictionary_size // classes)
  # FaMUS: both processes ran the variants the single process ran, re-run included.
  alone = json.loads((runs.one_process / method / 'record_p0.json').read_text())['variants']
  assert records[0]['variants'] == records[1]['variants'] == alone
  if method == 'famus':
    assert len(alone) == cfg.num_steps and sum(r for _, r in alone) >= 1  # a re-run happened

  # Only process 0 wrote the run's files: every event once, as in the single-process run.
  events = read_metrics(str(workdir))
  expected = read_metrics(str(runs.one_process / method))
  assert [(e['event'], e['step']) for e in events] == [(e['event'], e['step']) for e in expected]
  np.testing.assert_allclose([e['train_loss'] for e in events if e['event'] == 'train'],
                             [e['train_loss'] for e in expected if e['event'] == 'train'],
                             rtol=2e-4)
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['processes'] == 2 and len(summary['devices']) == 2
  assert summary['steps'] == cfg.num_steps


def checkpoint_params(workdir) -> dict:
  """The params of the workdir's newest checkpoint, restored onto this process's device."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = workdir / 'checkpoints'
  path = directory / str(max(int(p.name) for p in directory.iterdir() if p.name.isdigit()))
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path / 'state').item_metadata)
  return flat(checkpointer.restore(path / 'state', target)['params'])


def test_sigkill_of_one_process_stops_the_job_and_a_rerun_resumes(runs, tmp_path):
  """The README's command for 2 local processes; process 1 is SIGKILLed from outside."""
  workdir, port, overrides = tmp_path / 'job', free_port(), overrides_for('erm')
  flags = [f'--config.{k}={v}' for k, v in overrides.items()]

  def command(i):
    return [sys.executable, 'main.py', '--config=tiny', f'--workdir={workdir}', *flags,
            '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}',
            f'--config.distributed.coordinator_address=localhost:{port}']

  procs = start(command, 2, tmp_path, 'first', runs.cache)
  try:
    deadline = time.time() + TIMEOUT_S
    while not (workdir / 'checkpoints' / '4').is_dir():
      assert all(p.poll() is None for p in procs), log_of(tmp_path, 'first', 0)[-3000:]
      assert time.time() < deadline
      time.sleep(0.01)
    procs[1].send_signal(signal.SIGKILL)
    assert procs[1].wait(timeout=60) == -signal.SIGKILL
    rc = procs[0].wait(timeout=120)  # the survivor stops by itself, at once
  finally:
    stop(procs)
  out = log_of(tmp_path, 'first', 0)
  assert rc == 1, out[-3000:]
  assert 'error (DistributedError): process 0 of 2: another process of the job stopped' in out
  assert 'Rerun the same command on every host' in out
  assert not (workdir / 'summary.json').exists()

  procs = start(command, 2, tmp_path, 'rerun', runs.cache)
  wait_all(procs, tmp_path, 'rerun')
  out = log_of(tmp_path, 'rerun', 0)
  resumed = int(re.search(r'Resumed from the checkpoint at step (\d+)', out).group(1))
  assert 4 <= resumed < overrides['num_steps']
  assert 'Resumed from' not in log_of(tmp_path, 'rerun', 1)  # only process 0 talks
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == overrides['num_steps']
  events = read_metrics(str(workdir))
  assert [(e['event'], e['step']) for e in events] == [
      (e['event'], e['step']) for e in read_metrics(str(runs.one_process / 'erm'))]
  # The 2-process checkpoint restores in one process, with the single-process run's params.
  assert_params_close(checkpoint_params(workdir), runs.reference['erm'], 'erm, killed + resumed')
  with pytest.raises(AssertionError):  # the tolerance tells methods apart
    assert_params_close(checkpoint_params(workdir), runs.reference['mwnet'], 'erm vs mwnet')


def test_four_processes_train_what_one_process_trains(runs, tmp_path):
  procs = start_job(tmp_path, 4, ['mwnet'], runs.cache)
  wait_all(procs, tmp_path, 'job')
  params = [dict(np.load(tmp_path / 'mwnet' / f'params_p{i}.npz')) for i in range(4)]
  for other in params[1:]:
    for name, value in params[0].items():
      np.testing.assert_array_equal(other[name], value, err_msg=name)
  assert_params_close(params[0], runs.reference['mwnet'], 'mwnet, 4 processes vs 1')
  assert json.loads((tmp_path / 'mwnet' / 'summary.json').read_text())['processes'] == 4


# ---- config and single-process identities --------------------------------------------------------
@pytest.mark.parametrize('fields, pattern', [
    ({'num_processes': -1}, 'distributed.num_processes'),
    ({'num_processes': 2, 'process_id': 2}, r'distributed.process_id=2 must be in \[0, 2\)'),
    ({'process_id': -2}, 'distributed.process_id'),
    ({'local_device_ids': '0,x'}, 'distributed.local_device_ids'),
    ({'heartbeat_timeout_s': 0}, 'distributed.heartbeat_timeout_s'),
])
def test_bad_distributed_fields_are_named(fields, pattern):
  with pytest.raises(ConfigError, match=pattern):
    config_check.validate(make_config({}, fields))


def test_co_trained_pair_refuses_more_than_one_process():
  config = make_config({'method': 'mwnet', 'meta_set': 'pseudo_clean', 'num_meta': 0},
                       {'num_processes': 2, 'process_id': 0})
  with pytest.raises(ConfigError, match='co-trained pair .* one process only'):
    config_check.validate(config)


def test_processes_of_one_job_share_the_run_fingerprint():
  configs = [make_config({}, {'num_processes': 2, 'process_id': i,
                              'coordinator_address': 'h:1'}) for i in range(2)]
  data = build_data(configs[0])
  one = make_config({})
  assert run_fingerprint(configs[0], data) == run_fingerprint(configs[1], data)
  assert run_fingerprint(configs[0], data) == run_fingerprint(one, data)  # resumable elsewhere


def test_one_process_helpers_are_identities():
  mesh = distributed.global_mesh()
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  assert distributed.local_rows(sharded, 10) == slice(0, 10)
  x = np.arange(12).reshape(6, 2)
  arr = distributed.global_batch(sharded, 6, lambda rows: x[rows])
  np.testing.assert_array_equal(np.asarray(arr), x)
  tree = {'a': np.int32(3), 'b': np.ones(2)}
  assert distributed.agree(tree)['a'] == 3
  np.testing.assert_array_equal(distributed.host_copy(arr), x)
  assert distributed.is_primary() and not distributed.in_job()
  assert not distributed.is_peer_failure(ValueError('Gloo all-reduce failed'))  # one process
  distributed.initialize(make_config({}))  # one process: nothing to join
  assert not distributed.in_job()


if __name__ == '__main__':
  if sys.argv[1:2] == ['child']:
    child_main(sys.argv[2:])
