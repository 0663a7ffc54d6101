"""The benchmark's measurements: step time, XLA memory, peak memory, traces, the peer's steps.

`benchmark` runs the protocol of the package docstring; `memory_only` compiles without
timing; `peak_memory_in_child` measures one method's peak in a fresh process.
"""

import collections
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

import jax
import numpy as np

from famus_jax import catalogue
from famus_jax import provenance
from famus_jax.data import build_data
from famus_jax.tools import xla_trace
from famus_jax.tools.benchmark.specs import make_config, method_spec, method_specs, peer_method
from famus_jax.tools.benchmark.specs import settle_steps_of, step_form
from famus_jax.train.trainer import Run, data_mesh


class Timed:
  """One method's run, state and timings."""

  def __init__(self, name: str, config):
    self.name, self.config = name, config
    self.run = Run(config, build_data(config), data_mesh())
    self.state = self.run.init_state()
    self.step, self.last = 0, None
    self.wall, self.cpu, self.counters = [], [], []  # timed steps: seconds, step counter
    self.compile_s, self.reruns = 0.0, 0
    self.history = []  # FaMUS: per step (active mask, bucket needed, re-run?, timed?)

  def one_step(self, timed=False):
    """(wall s, cpu s, compiled) of one production step."""
    batch = self.run.batch(self.step)
    t0, c0 = time.perf_counter(), time.process_time()
    result = self.run.run_step(self.state, batch, self.last)
    jax.block_until_ready(result.state)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    self.state, self.last = result.state, result.dispatch
    self.reruns += result.reruns
    self.step += 1
    if result.dispatch is not None and catalogue.FAMUS_ACTIVE in result.output.metrics:
      self.history.append({'active': np.asarray(result.output.metrics[catalogue.FAMUS_ACTIVE]),
                           'bucket': int(result.dispatch.bucket_needed),
                           'rerun': result.reruns > 0, 'timed': timed and not result.compiled})
    return wall, cpu, result.compiled

  def settle(self, steps: int):
    for _ in range(steps):
      wall, _, compiled = self.one_step()
      self.compile_s += wall if compiled else 0.0
    for _ in range(20):  # until a step runs without compiling
      wall, _, compiled = self.one_step()
      if not compiled:
        return
      self.compile_s += wall

  def timed_step(self):
    counter = self.step
    wall, cpu, compiled = self.one_step(timed=True)
    if compiled:
      self.compile_s += wall
      return
    self.wall.append(wall)
    self.cpu.append(cpu)
    self.counters.append(counter)

  def typical_step(self) -> dict:
    """{'step_time_s', 'cpu_time_s'}: the median timed step, or with amortised meta updates
    (the method's update_every = k > 1) the mean step of a k-step cycle, (median meta-update
    step + (k - 1) median other step) / k, with the two medians beside it."""
    every = self.run.method.update_every
    if every == 1:
      return {'step_time_s': float(np.median(self.wall)), 'cpu_time_s': float(np.median(self.cpu))}
    meta = np.asarray(self.counters) % every == 0
    if meta.all() or not meta.any():
      raise ValueError(f'{self.name}: the timed steps need both kinds of step of a '
                       f'{every}-step cycle; time at least {every + 1} steps')
    out = {'update_every': every}
    for key, times in (('step_time_s', self.wall), ('cpu_time_s', self.cpu)):
      times = np.asarray(times)
      with_update, without = float(np.median(times[meta])), float(np.median(times[~meta]))
      out[key] = (with_update + (every - 1) * without) / every
      out[f'{key[:-2]}_meta_update_s'] = with_update
      out[f'{key[:-2]}_between_updates_s'] = without
    return out


def xla_step_memory(timed: Timed) -> dict:
  """XLA's buffer assignment of the compiled step for the variant in use, in bytes.

  peak = arguments (train state, batch) + outputs + temporaries (activations
  kept for the backward pass, workspaces) - what donation aliases: the device
  memory the step needs, the quantity the papers' GPU-memory comparisons are
  about. Also the method state's share of the arguments. With amortised meta
  updates (the method's update_every = k > 1) the step that updates the meta
  model, the larger of the two kinds.
  """
  run = timed.run
  every = run.method.update_every
  step = -(-timed.step // every) * every  # the next meta-update step (any step at k = 1)
  fn = run.step_fn(run.method.variants.choose(timed.last, step))
  stats = fn.lower(timed.state, run.batch(step)).compile().memory_analysis()
  out = {'argument_bytes': int(stats.argument_size_in_bytes),
         'output_bytes': int(stats.output_size_in_bytes),
         'alias_bytes': int(stats.alias_size_in_bytes),
         'temp_bytes': int(stats.temp_size_in_bytes),
         'method_state_bytes': int(sum(x.nbytes for x in jax.tree.leaves(
             timed.state.method_state)))}
  out['xla_step_bytes'] = (out['argument_bytes'] + out['output_bytes'] + out['temp_bytes']
                           - out['alias_bytes'])
  return out


def trace_step(timed: Timed, batch_size: int, steps: int = 2) -> dict:
  """{category: XLA:CPU seconds per step} of `steps` more production steps (xla_trace.py).

  Needs the process started with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true (`main`
  sets it for `--trace`); without it XLA records no per-instruction events ({}).
  """
  run = timed.run
  fn = run.step_fn(run.method.variants.choose(timed.last, timed.step))
  text = fn.lower(timed.state, run.batch(timed.step)).compile().as_text()
  seconds = xla_trace.instruction_seconds(timed.one_step, steps)
  return dict(xla_trace.categorize(seconds, text, batch_size).most_common())


def _rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class _RssSampler(threading.Thread):
  """Highest resident set size seen while running (sampled every `interval` s)."""

  def __init__(self, interval=0.002):
    super().__init__(daemon=True)
    self.interval, self.peak, self.stop = interval, _rss_bytes(), threading.Event()

  def run(self):
    while not self.stop.is_set():
      self.peak = max(self.peak, _rss_bytes())
      time.sleep(self.interval)


def measure_peak_memory(name: str, config, settle: int, steps: int = 3) -> dict:
  """Peak memory of `steps` steps of one method, in this (fresh) process.

  Device `peak_bytes_in_use` when the backend has memory statistics, else the
  sampled process RSS (and the RSS just before the steps, for the increase).
  """
  timed = Timed(name, config)
  timed.settle(settle)
  stats = jax.devices()[0].memory_stats()
  before = _rss_bytes()
  sampler = _RssSampler()
  sampler.start()
  for _ in range(steps):
    timed.one_step()
  sampler.stop.set()
  sampler.join()
  out = {'peak_rss_bytes': sampler.peak, 'rss_before_steps_bytes': before}
  if stats is not None:
    out['device_peak_bytes'] = int(jax.devices()[0].memory_stats()['peak_bytes_in_use'])
  return out


def peak_memory_in_child(name: str, model: str, batch_size: int, image_size: int,
                         settle: int, extra: dict, derived: dict) -> dict:
  """`measure_peak_memory` in a fresh Python process (peaks are per process)."""
  request = json.dumps({'name': name, 'model': model, 'batch_size': batch_size,
                        'image_size': image_size, 'settle': settle,
                        'extra': {**extra, **derived}})
  proc = subprocess.run([sys.executable, '-m', 'famus_jax.tools.benchmark', '--memory_child',
                         request],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'peak-memory child for {name} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_child(request: str) -> None:
  """Prints `measure_peak_memory` of the JSON `request` as one JSON line (the child's side)."""
  r = json.loads(request)
  config = make_config(r['model'], r['batch_size'], r['image_size'], method_spec(r['name']),
                       r['extra'])
  print(json.dumps(measure_peak_memory(r['name'], config, r['settle'])))


def famus_summary(timed: Timed, records: list) -> dict:
  """Which layers were active over `records` (history entries), how often the guess missed."""
  sets = timed.run.method.estimator.cached_layer_sets
  names = list(sets.candidates)
  if not records:
    return {}
  seen = collections.Counter(tuple(n for n, a in zip(names, m['active']) if a > 0.5)
                             for m in records)
  frequent, count = seen.most_common(1)[0]
  return {
      'steps': len(records),
      'candidates': len(names),
      'mean_num_sampled': float(np.mean([m['active'].sum() for m in records])),
      'active_fraction': {n: float(f) for n, f in zip(
          names, np.mean([m['active'] for m in records], axis=0)) if f > 0},
      'most_frequent_active_set': [n for n in sets.names
                                   if n in frequent or n in sets.always_on],
      'most_frequent_share': count / len(records),
      'buckets_needed': {sets.names[sets.bucket_floors[b]]: c for b, c in sorted(
          collections.Counter(m['bucket'] for m in records).items())},
      'rerun_fraction': float(np.mean([m['rerun'] for m in records])),
  }


def device_name() -> str:
  d = jax.devices()[0]
  name = getattr(d, 'device_kind', d.platform)
  cpu = provenance.cpu_model()
  return f'{d.platform}:{name}' + (f' ({cpu})' if cpu and d.platform == 'cpu' else '')


def load_peer_module():
  """famus_jax.tools.torch_peer, imported on request only (torch is an optional extra)."""
  try:
    return importlib.import_module('famus_jax.tools.torch_peer')
  except ImportError as e:
    raise SystemExit(f'--peers=torch needs PyTorch: pip install -e ".[peers]" ({e})') from e


def make_peers(model: str, batch_size: int, image_size: int, methods: list, threads: int,
               log=print) -> dict:
  """{peer method: torch_peer.Peer} for the distinct peer methods of `methods`."""
  peer_lib = load_peer_module()
  peers = {}
  for name in methods:
    method = peer_method(name)
    if method is not None and method not in peers:
      peers[method] = peer_lib.make_peer(model, batch_size, image_size, method, threads)
      for _ in range(2):  # warm-up steps, untimed
        peers[method].step()
      log(f'torch peer {method}: ready ({peers[method].describe()["device"]})')
  return peers


def benchmark(model: str, batch_size: int, methods: list, steps: int, image_size: int = 32,
              settle_steps: Optional[int] = None, extra: Optional[dict] = None,
              log=print, peak_memory: bool = False, peers: Sequence[str] = (),
              threads: int = 1, trace: bool = False) -> dict:
  """Run the protocol of the module docstring; returns the JSON-able results.

  peers=('torch',): the PyTorch peer of each method (`famus_jax.tools.torch_peer`) is timed in the
  same rounds, right after ours (torch uses `threads` threads; pin the process with
  taskset so that both frameworks run on the same cores), and every method's row gets
  the peer's median step and the ratio peer / ours.
  """
  specs = method_specs()
  unknown = [m for m in methods if m not in specs]
  if unknown:
    raise ValueError(f'unknown methods {unknown}; known: {sorted(specs)}')
  results = {}
  timed = {}
  for name in methods:
    spec = specs[name]
    derived = spec.derive(results) if spec.derive else {}
    results.setdefault(name, {})['overrides'] = derived
    config = make_config(model, batch_size, image_size, spec, {**(extra or {}), **derived})
    t0 = time.perf_counter()
    timed[name] = Timed(name, config)
    settle = settle_steps_of(spec, settle_steps)
    timed[name].settle(settle)
    log(f'{name}: ready after {time.perf_counter() - t0:.1f}s (settling {settle} steps, '
        f'compile {timed[name].compile_s:.1f}s)')
    if timed[name].history:  # the settled state, for specs derived from this one
      tail = timed[name].history[-max(settle // 2, 1):]
      results[name]['settled'] = famus_summary(timed[name], tail)
  torch_peers = make_peers(model, batch_size, image_size, methods, threads, log) \
      if 'torch' in peers else {}
  peer_times = {m: ([], []) for m in torch_peers}
  for _ in range(steps):
    for name in methods:
      timed[name].timed_step()
    for method, peer in torch_peers.items():
      peer_times[method][0].append(peer.step())
      peer_times[method][1].append(peer.last_cpu_s)
  out = {}
  for name in methods:
    t = timed[name]
    out[name] = {
        **t.typical_step(),
        'timed_steps': len(t.wall),
        'compile_time_s': t.compile_s,
        'reruns': t.reruns,
        'variants_compiled': len(t.run._steps),  # pylint: disable=protected-access
        'overrides': {**specs[name].overrides, **results.get(name, {}).get('overrides', {})},
        'actual_step': step_form(t.config),
        **xla_step_memory(t),
    }
    if trace:
      out[name]['trace_s'] = trace_step(t, batch_size)
    if peak_memory:
      log(f'{name}: peak memory in a child process')
      out[name].update(peak_memory_in_child(
          name, model, batch_size, image_size, settle_steps_of(specs[name], settle_steps),
          extra or {},
          results.get(name, {}).get('overrides', {})))
    if t.history:
      out[name]['famus'] = famus_summary(t, [m for m in t.history if m['timed']])
      out[name]['famus_settled'] = results.get(name, {}).get('settled')
  for name, r in out.items():
    method = peer_method(name)
    if method in torch_peers:
      r['peer_step_time_s'] = float(np.median(peer_times[method][0]))
      r['peer_cpu_time_s'] = float(np.median(peer_times[method][1]))
      r['peer_ratio'] = r['peer_step_time_s'] / r['step_time_s']
      r['peer'] = torch_peers[method].describe()
  erm = out.get('erm')
  for name, r in out.items():
    r['ratio_to_erm'] = r['step_time_s'] / erm['step_time_s'] if erm else None
    r['cpu_ratio_to_erm'] = r['cpu_time_s'] / erm['cpu_time_s'] if erm else None
    for key in ('xla_step_bytes', 'device_peak_bytes', 'peak_rss_bytes'):
      if erm and key in r and key in erm:
        r[key.replace('_bytes', '_ratio_to_erm')] = r[key] / erm[key]
    if 'mwnet' in out:
      r['ratio_to_mwnet'] = r['step_time_s'] / out['mwnet']['step_time_s']
      r['cpu_ratio_to_mwnet'] = r['cpu_time_s'] / out['mwnet']['cpu_time_s']
  return {'device': device_name(), 'num_devices': jax.device_count(),
          'jax': jax.__version__, 'python': platform.python_version(),
          'model': model, 'batch_size': batch_size, 'image_size': image_size,
          'timed_steps_per_method': steps, 'methods': out, 'traced': trace}


def memory_only(model: str, batch_size: int, methods: list, image_size: int = 32,
                extra: Optional[dict] = None, log=print) -> dict:
  """XLA's buffer assignment of each method's compiled step, without running a step.

  For models too slow to time on the machine at hand (e.g. WRN-28-10 on a
  CPU): compiles each method's first variant (FaMUS: before any settling) and
  reads `memory_analysis()`; compile time is reported, step time is not.
  """
  out = {}
  for name in methods:
    spec = method_spec(name)
    timed = Timed(name, make_config(model, batch_size, image_size, spec, extra or {}))
    t0 = time.perf_counter()
    out[name] = {**xla_step_memory(timed),
                 'compile_time_s': time.perf_counter() - t0,
                 'overrides': spec.overrides,
                 'actual_step': step_form(timed.config)}
    log(f'{name}: {out[name]["xla_step_bytes"] / 2**20:.0f} MiB, compiled in '
        f'{out[name]["compile_time_s"]:.1f}s')
  if 'erm' in out:
    for r in out.values():
      r['xla_step_ratio_to_erm'] = r['xla_step_bytes'] / out['erm']['xla_step_bytes']
  return {'device': device_name(), 'num_devices': jax.device_count(), 'jax': jax.__version__,
          'python': platform.python_version(), 'model': model, 'batch_size': batch_size,
          'image_size': image_size, 'memory_only': True, 'methods': out}


