"""Past one machine: multi-process data parallelism through JAX's multi-controller runtime.

Every process of a job runs the same program. `initialize` connects them
(`jax.distributed.initialize`, from `config.distributed` or the cluster
environment); from then on `jax.devices()` lists the devices of every process
and one `Mesh` (`global_mesh`) spans them all. The one jitted step runs on that
mesh unchanged: the state is replicated, every batch is sharded along the mesh's
`data` axis, and XLA's collectives (gloo between CPU processes) sum the
gradients across processes inside the step.

What each process does by itself, and what must agree:

- Batches. The global batch of step s is a pure function of (seed, s)
  (`famus_jax.data.batches`), so every process computes the same global ids and
  gathers the images of only its own rows (`local_rows`): process p holds rows
  [p n / P, (p + 1) n / P) of an n-example batch with P processes of equal
  device counts. `global_batch` assembles the process-local rows into one
  global array (`jax.make_array_from_process_local_data`).
- Host decisions. Whatever the host decides from device values must be the
  same in every process, or the processes would run different programs and
  deadlock: the finite flag and FaMUS's dispatch record (which compiled
  variant runs next, `Run.run_step`), and host-side state updates (FSR's
  dictionary refresh, the initial state). `agree` makes every process use
  process 0's values (one broadcast, `multihost_utils.broadcast_one_to_all`),
  so agreement does not rest on bitwise-identical float arithmetic on every
  host.
- Files. Only process 0 (`is_primary`) writes metrics.jsonl, summary.json,
  config.json and the progress bar; every process takes part in each Orbax
  save and restore of the one checkpoint directory (Orbax writes a replicated
  array once, from process 0).
- Failures. A process that dies (SIGKILL, a lost host) breaks the next
  collective of the others, which then stop with `DistributedError`
  (`lost_process_error`) instead of waiting; a rerun of the same command on
  every host resumes from the last checkpoint.

With `config.distributed.num_processes = 1` (the default) nothing here calls
`jax.distributed`, and every helper is the single-process identity.
"""

import dataclasses
import os
import sys
from typing import Any, Callable, Optional, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from famus_jax.errors import ConfigError, DistributedError, first_line

# Pieces of the messages of a collective or coordination-service call whose peer process has
# gone (gloo's "Connection closed by peer", a heartbeat timeout, a failed barrier).
PEER_FAILURE_MARKERS = ('gloo', 'connection closed', 'connection reset', 'connection refused',
                        'heartbeat', 'coordination service', 'barrier', 'unavailable',
                        'deadline_exceeded', 'socket closed')


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  """`config.distributed` as typed values (famus_jax/config.py documents every field).

  num_processes: 1 = a single process (no jax.distributed); 0 = every value from the
    cluster environment (JAX's detection: SLURM, Open MPI, Cloud TPU, Kubernetes).
  process_id: this process's rank, or -1 = from the cluster environment.
  coordinator_address: 'host:port' of process 0, or '' = $JAX_COORDINATOR_ADDRESS or the
    cluster environment.
  local_device_ids: the local devices this process uses; () = all (or $JAX_LOCAL_DEVICE_IDS).
  initialization_timeout_s, heartbeat_timeout_s: passed to `jax.distributed.initialize`.
  """
  num_processes: int
  process_id: int
  coordinator_address: str
  local_device_ids: Tuple[int, ...]
  initialization_timeout_s: int
  heartbeat_timeout_s: int

  @property
  def multi_process(self) -> bool:
    return self.num_processes != 1

  @classmethod
  def from_config(cls, config) -> 'DistributedSettings':
    d = config.distributed
    return cls(num_processes=d.num_processes, process_id=d.process_id,
               coordinator_address=d.coordinator_address,
               local_device_ids=parse_device_ids(d.local_device_ids),
               initialization_timeout_s=d.initialization_timeout_s,
               heartbeat_timeout_s=d.heartbeat_timeout_s)


def parse_device_ids(text: str) -> Tuple[int, ...]:
  """'0,1' -> (0, 1); '' -> (). Raises ConfigError naming the field."""
  parts = [p.strip() for p in str(text).split(',') if p.strip()]
  if not all(p.isdigit() for p in parts):
    raise ConfigError(f'config.distributed.local_device_ids={text!r} is not a comma-separated '
                      f'list of device ids >= 0 (e.g. "0,1"), nor "" (every local device)')
  return tuple(int(p) for p in parts)


def _int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_config(config, single_process: Optional[str] = None) -> None:
  """Raise ConfigError naming the first invalid `config.distributed` field.

  single_process: what in the config runs in one process only (a phrase
  naming its fields, e.g. the co-trained pair's), or None; with it, a job of
  several processes is refused.
  """
  d = config.distributed
  if not _int(d.num_processes) or d.num_processes < 0:
    raise ConfigError(f'config.distributed.num_processes={d.num_processes!r} must be an '
                      f'integer >= 0 (1 = one process, 0 = from the cluster environment)')
  if not _int(d.process_id) or d.process_id < -1:
    raise ConfigError(f'config.distributed.process_id={d.process_id!r} must be an integer >= -1 '
                      f'(-1 = from the cluster environment)')
  if d.num_processes > 1 and d.process_id >= d.num_processes:
    raise ConfigError(f'config.distributed.process_id={d.process_id!r} must be in '
                      f'[0, {d.num_processes}) with config.distributed.num_processes='
                      f'{d.num_processes}')
  for field in ('initialization_timeout_s', 'heartbeat_timeout_s'):
    if not _int(d[field]) or d[field] < 1:
      raise ConfigError(f'config.distributed.{field}={d[field]!r} must be an integer >= 1')
  parse_device_ids(d.local_device_ids)
  if d.num_processes != 1 and single_process is not None:
    raise ConfigError(f'{single_process} runs in one process only: '
                      f'config.distributed.num_processes={d.num_processes!r} must be 1')


def initialize(config) -> None:
  """Joins this process to the job of `config.distributed` (nothing for one process).

  Must run before anything touches a JAX device (`train_and_evaluate` calls it first).
  Calling it again in a process that has joined the same job is a no-op.
  """
  s = DistributedSettings.from_config(config)
  if not s.multi_process:
    return
  if jax.distributed.is_initialized():
    _check_joined(s)
    return
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # collectives between CPUs
  where = s.coordinator_address or '$JAX_COORDINATOR_ADDRESS / the cluster environment'
  try:
    jax.distributed.initialize(
        coordinator_address=s.coordinator_address or None,
        num_processes=s.num_processes or None,
        process_id=None if s.process_id < 0 else s.process_id,
        local_device_ids=list(s.local_device_ids) or None,
        initialization_timeout=s.initialization_timeout_s,
        heartbeat_timeout_seconds=s.heartbeat_timeout_s)
  except ValueError as e:  # a value neither in the config nor in the environment
    raise ConfigError(
        f'config.distributed: {e} Set config.distributed.coordinator_address, num_processes '
        f'and process_id (or run under a cluster manager JAX detects: SLURM, Open MPI, Cloud '
        f'TPU, Kubernetes)') from None
  except RuntimeError as e:
    if 'must be called before' in str(e):
      raise DistributedError(
          'jax.distributed must start before any JAX computation in the process; call '
          'famus_jax.train.distributed.initialize(config) first (famus-train does)') from None
    raise DistributedError(
        f'process {s.process_id} of {s.num_processes} could not join the job at {where} '
        f'within {s.initialization_timeout_s} s ({first_line(e)}): start the same command on '
        f'every host, with its own config.distributed.process_id') from None


def _check_joined(s: DistributedSettings) -> None:
  count, index = jax.process_count(), jax.process_index()
  if (s.num_processes and s.num_processes != count) or (0 <= s.process_id != index):
    raise DistributedError(
        f'this process already joined a job as process {index} of {count}; config.distributed '
        f'asks for process {s.process_id} of {s.num_processes}')


def in_job() -> bool:
  """Whether this process has joined a multi-process job (`initialize`)."""
  return jax.distributed.is_initialized()


def exit_now(message: str) -> None:
  """Ends the process with `message` on stderr and exit status 1.

  In a job the process ends at once (`os._exit`), without jax.distributed's shutdown barrier:
  that barrier waits for every process, also for one that died, and then aborts. Ending
  closes this process's connections, so the others' next collective fails and they stop too.
  Outside a job: `sys.exit(message)`.
  """
  if not in_job():
    sys.exit(message)
  print(message, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def global_mesh(axis: str = 'data') -> Mesh:
  """A one-axis mesh over the devices of every process, each process's devices contiguous."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (axis,))


def local_rows(sharding: NamedSharding, size: int) -> slice:
  """The rows [start, stop) of a (size, ...) array, sharded along axis 0, that this
  process's devices hold (all of them for one process or a replicated sharding)."""
  spans = sorted({(index[0].start or 0, size if index[0].stop is None else index[0].stop)
                  for index in sharding.addressable_devices_indices_map((size,)).values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if start > stop:
      raise ValueError(f'the devices of process {jax.process_index()} hold the rows {spans} '
                       f'of a sharded axis, which are not contiguous')
  return slice(spans[0][0], spans[-1][1])


def global_batch(sharding: NamedSharding, size: int, load: Callable[[slice], Any]):
  """One global array per leaf of `load(rows)`, each (size, ...) and sharded by `sharding`.

  load(rows): the process-local rows [rows.start, rows.stop) of every leaf, as host arrays
  (rows.stop - rows.start, ...). Each process reads only its own rows.
  """
  local = load(local_rows(sharding, size))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), (size,) + np.shape(x)[1:]), local)


def host_copy(tree):
  """Host (numpy) copy of a tree of arrays; arrays sharded over other processes' devices are
  gathered first (a collective: every process calls it at the same point)."""
  def gathered(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return multihost_utils.process_allgather(x, tiled=True)
    return x
  return jax.device_get(jax.tree.map(gathered, tree))


def host_scalar(x) -> int:
  """The host int of a replicated () array, read from this process's own copy (no collective:
  a replicated value is the same in every process)."""
  if isinstance(x, jax.Array):
    x = x.addressable_data(0)
  return int(np.asarray(x))


def agree(tree):
  """Process 0's host values of `tree` in every process (the host copy for one process).

  For host decisions that must be the same everywhere (the finite flag, FaMUS's dispatch
  record): every process calls it at the same point.
  """
  tree = jax.device_get(tree)
  if jax.process_count() == 1:
    return tree
  return multihost_utils.broadcast_one_to_all(tree)


def replicate(tree, sharding: NamedSharding):
  """`tree` as arrays replicated over `sharding`'s devices, holding process 0's values."""
  if jax.process_count() > 1:
    tree = agree(tree)
  return jax.device_put(tree, sharding)


def replicate_changed(new, old, sharding: NamedSharding):
  """`new` with the leaves that are not `old`'s own objects replaced by process 0's values
  (for a host hook's result, e.g. FSR's refreshed dictionary); `new` itself for one process."""
  if jax.process_count() == 1:
    return new
  new_leaves, treedef = jax.tree.flatten(new)
  old_ids = {id(x) for x in jax.tree.leaves(old)}
  changed = [i for i, x in enumerate(new_leaves) if id(x) not in old_ids]
  fresh = replicate([new_leaves[i] for i in changed], sharding)
  for i, value in zip(changed, fresh):
    new_leaves[i] = value
  return jax.tree.unflatten(treedef, new_leaves)


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def is_peer_failure(e: BaseException) -> bool:
  """Whether `e` is a collective or coordination failure of a multi-process job (a peer died)."""
  if jax.process_count() == 1 or not isinstance(e, (RuntimeError, ValueError, OSError)):
    return False
  text = str(e).lower()
  return any(marker in text for marker in PEER_FAILURE_MARKERS)


def lost_process_error(e: BaseException, step: int,
                       last_checkpoint: Optional[str]) -> DistributedError:
  """The error a process stops with when a peer of the job has gone at `step`."""
  resume = (f'the last checkpoint is {last_checkpoint}' if last_checkpoint
            else 'there is no checkpoint of this run yet')
  return DistributedError(
      f'process {jax.process_index()} of {jax.process_count()}: another process of the job '
      f'stopped or became unreachable during step {step + 1} ({first_line(e)}). The job '
      f'stops; {resume}. Rerun the same command on every host to resume from it.')
