"""Step-time benchmark of the production training step, method against method.

  python -m famus_jax.tools.benchmark --model=resnet32 --batch_size=100 \\
      --methods=erm,mwnet,famus,famus_static --out=bench.json

Every method runs the real trainer pieces (`train.trainer.Run`: the jitted
`make_train_step`, `Run.run_step` with FaMUS's speculative re-runs, whose
`StepResult.reruns` is counted) on the synthetic source at CIFAR shape
(32x32x3 uint8, 10 classes). Protocol (docs/design.md, "Measuring speed"):

  1. per method: build the run, optionally a settling run (`settle_steps`,
     e.g. FaMUS's samplers), then steps until one runs without compiling;
  2. timed rounds, interleaved: each round times one step of every method in
     turn (wall clock around `run_step` + `block_until_ready`, and the
     process's CPU time), so that load from other processes on the machine
     hits all methods alike; a step that compiled a new variant is not
     counted (its time goes to `compile_time_s`);
  3. per method the median step time over the timed steps and its ratio to
     ERM's median from the same run (wall and CPU);
  4. memory, per method: XLA's buffer assignment of the compiled step
     (arguments + outputs + temporaries - donated aliases, `xla_step_bytes`:
     what the step needs on the device, the same on every backend), and with
     `--peak_memory` a fresh child process per method that runs a few steps
     and reports the device's `peak_bytes_in_use` where the backend keeps
     memory statistics (GPU), else the process's resident set size sampled
     every 2 ms during the steps (`peak_rss_bytes`; on CPU this includes the
     runtime, the data and the compiled code, so ratios are diluted).

Methods are the benchmark variants of `famus_jax.catalogue` (name -> config
overrides, settling steps, and optionally the layers the learned samplers of
another variant settled on: 'famus_static' holds those of 'famus'). Add a
variant to a method's catalogue entry (or a network to `MODELS`) to benchmark it.

`--profile` also times the parts of a meta step as separate jitted
functions (forward, backward, validation forward/backward, JVPs), to explain
the ratios. `--trace` (CPU) records XLA:CPU's own time per instruction of two
more production steps of every method (`famus_jax/tools/xla_trace.py`) and
prints them by category (conv forward / dX / dW, BatchNorm, transposes, ...):
where one method's step spends what another's does not. The tracing option
applies to every compile of the process, so a `--trace` run's step times
may carry its overhead (the title says so): take times from a run without it.
"""

import argparse
import collections
import dataclasses
import functools
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from famus_jax import catalogue
from famus_jax import config as base_config
from famus_jax.data import build_data
from famus_jax.famus import layer_sets
from famus_jax.meta import meta_gradient as mg
from famus_jax.models import create_model, layer_names
from famus_jax.tools import xla_trace
from famus_jax.train.step import cross_entropy
from famus_jax.train.trainer import Run, data_mesh


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """overrides: dotted config field -> value. settle_steps: untimed steps first
  (e.g. for samplers to settle). derive: results so far -> extra overrides."""
  overrides: dict
  settle_steps: int = 0
  derive: Optional[Callable[[dict], dict]] = None


def _static_from_learned(results: dict, learned: str) -> dict:
  """'famus_static': the layer set `learned`'s samplers chose most often at the end of settling."""
  layers = results.get(learned, {}).get('settled', {}).get('most_frequent_active_set')
  return {'famus.static_layers': ','.join(layers)} if layers else {}


def method_specs() -> dict:
  """Benchmark name -> `MethodSpec`: the benchmark variants `famus_jax.catalogue` declares."""
  specs = {}
  for name, (_, variant) in catalogue.benchmark_variants().items():
    derive = (functools.partial(_static_from_learned, learned=variant.static_layers_from)
              if variant.static_layers_from else None)
    specs[name] = MethodSpec(dict(variant.overrides), variant.settle_steps, derive)
  return specs


def method_spec(name: str) -> MethodSpec:
  """The spec of benchmark variant `name` (ValueError naming the known ones otherwise)."""
  specs = method_specs()
  if name not in specs:
    raise ValueError(f'unknown method {name!r}; known: {sorted(specs)}')
  return specs[name]


MODELS = {
    'resnet32': {'model': 'resnet', 'depth': 32},
    'resnet20': {'model': 'resnet', 'depth': 20},
    'resnet8': {'model': 'resnet', 'depth': 8},
    'wrn-28-2': {'model': 'wide_resnet', 'depth': 28, 'width': 2},
    'wrn-40-2': {'model': 'wide_resnet', 'depth': 40, 'width': 2},  # the FaMUS supplement's MLC net
    'wrn-28-10': {'model': 'wide_resnet', 'depth': 28, 'width': 10},
    'preact_resnet18': {'model': 'preact_resnet18'},
    'small_cnn': {'model': 'small_cnn', 'width': 16},
}


def make_config(model: str, batch_size: int, image_size: int, spec: MethodSpec,
                extra: dict):
  c = base_config.get_config()
  c.dataset = c.data_source = 'synthetic'
  c.synthetic.image_size = image_size
  c.synthetic.num_train = 4 * batch_size
  c.synthetic.num_test = batch_size
  c.num_meta = 10 * -(-batch_size // 10)  # class-balanced: a multiple of the 10 classes
  c.batch_size = c.meta_batch_size = c.eval_batch_size = batch_size
  c.num_steps = 100_000
  c.lr.schedule = 'constant'
  c.progress_bar = False
  for key, value in {**MODELS[model], **spec.overrides, **extra}.items():
    node = c
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    node[leaf] = value
  return c


class Timed:
  """One method's run, state and timings."""

  def __init__(self, name: str, config):
    self.name, self.config = name, config
    self.run = Run(config, build_data(config), data_mesh())
    self.state = self.run.init_state()
    self.step, self.last = 0, None
    self.wall, self.cpu = [], []
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
    wall, cpu, compiled = self.one_step(timed=True)
    if compiled:
      self.compile_s += wall
      return
    self.wall.append(wall)
    self.cpu.append(cpu)


def step_form(config) -> str:
  """How the method's actual update is computed, for the table's 'actual step' column."""
  method = config.method
  if method == 'famus' and config.famus.base == 'l2r' or method == 'l2r':
    return 'l2r (one form)'
  if method in ('mwnet', 'famus', 'mlc'):
    return config.meta.actual_step
  if method == 'fsr':
    return config.fsr.mixup_form if config.fsr.mixup_alpha > 0 else 'no mixup'
  return '-'


def xla_step_memory(timed: Timed) -> dict:
  """XLA's buffer assignment of the compiled step for the variant in use, in bytes.

  peak = arguments (train state, batch) + outputs + temporaries (activations
  kept for the backward pass, workspaces) - what donation aliases: the device
  memory the step needs, the quantity the papers' GPU-memory comparisons are
  about. Also the method state's share of the arguments.
  """
  run = timed.run
  fn = run.step_fn(run.method.variant(timed.last))
  stats = fn.lower(timed.state, run.batch(timed.step)).compile().memory_analysis()
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
  fn = run.step_fn(run.method.variant(timed.last))
  text = fn.lower(timed.state, run.batch(timed.step)).compile().as_text()
  seconds = xla_trace.instruction_seconds(timed.one_step, steps)
  return dict(xla_trace.categorize(seconds, text, batch_size).most_common())


def trace_table(result: dict) -> str:
  """Markdown: XLA:CPU ms per step by category (rows) for each traced method (columns)."""
  names = [n for n, r in result['methods'].items() if r.get('trace_s')]
  if not names:
    return ''
  cats = sorted({c for n in names for c in result['methods'][n]['trace_s']},
                key=lambda c: -max(result['methods'][n]['trace_s'].get(c, 0.0) for n in names))
  rows = ['| XLA:CPU ms per step | ' + ' | '.join(names) + ' |',
          '|---|' + '---|' * len(names)]
  for c in cats + ['total']:
    vals = [sum(result['methods'][n]['trace_s'].values()) if c == 'total'
            else result['methods'][n]['trace_s'].get(c, 0.0) for n in names]
    rows.append(f'| {c} | ' + ' | '.join(f'{1e3 * v:.0f}' for v in vals) + ' |')
  return '\n'.join(rows)


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


def _memory_child(request: str) -> None:
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
  cpu = ''
  try:
    with open('/proc/cpuinfo') as f:
      models = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    cpu = f'{models[0]} x{len(models)}' if models else ''
  except OSError:
    pass
  return f'{d.platform}:{name}' + (f' ({cpu})' if cpu and d.platform == 'cpu' else '')


def _settle_steps(spec: MethodSpec, override: Optional[int]) -> int:
  """The spec's settling steps, or `override` for specs that settle at all."""
  if override is None:
    return spec.settle_steps
  return override if spec.settle_steps else 0


def peer_method(name: str) -> Optional[str]:
  """The PyTorch peer's method for benchmark variant `name`, or None when it has none."""
  method, variant = catalogue.benchmark_variants()[name]
  return method.peer if variant.peer else None


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

  peers=('torch',): the PyTorch peer of each method (`torch_peer.py`) is timed in the
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
    settle = _settle_steps(spec, settle_steps)
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
        'step_time_s': float(np.median(t.wall)),
        'cpu_time_s': float(np.median(t.cpu)),
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
          name, model, batch_size, image_size, _settle_steps(specs[name], settle_steps),
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


def memory_table(result: dict) -> str:
  rows = ['| method | actual step | XLA step MiB | x ERM | compile (s) |',
          '|---|---|---|---|---|']
  for name, r in result['methods'].items():
    rows.append(f'| {name} | {r.get("actual_step", "-")} | {_mib(r["xla_step_bytes"])} | '
                f'{_ratio(r.get("xla_step_ratio_to_erm"))} | {r["compile_time_s"]:.1f} |')
  return '\n'.join(rows)


def _mib(v):
  return '-' if v is None else f'{v / 2**20:.0f}'


def _ratio(v):
  return '-' if v is None else f'{v:.2f}'


def markdown_table(result: dict) -> str:
  """One row per method: time, ratios, compile, re-runs, memory (MiB and x ERM)."""
  peak = 'device_peak_bytes' if any('device_peak_bytes' in r for r in result['methods'].values()) \
      else 'peak_rss_bytes'
  peak_label = 'device peak' if peak == 'device_peak_bytes' else 'peak RSS'
  rows = [f'| method | actual step | step (s) | x ERM | x MW-Net | CPU (s) | compile (s) '
          f'| re-runs | XLA step MiB | x ERM | {peak_label} MiB | x ERM |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for name, r in result['methods'].items():
    rows.append(
        f'| {name} | {r.get("actual_step", "-")} | {r["step_time_s"]:.3f} | '
        f'{_ratio(r.get("ratio_to_erm"))} | '
        f'{_ratio(r.get("ratio_to_mwnet"))} | {r["cpu_time_s"]:.3f} | '
        f'{r["compile_time_s"]:.1f} | {r["reruns"]} | {_mib(r.get("xla_step_bytes"))} | '
        f'{_ratio(r.get("xla_step_ratio_to_erm"))} | {_mib(r.get(peak))} | '
        f'{_ratio(r.get(peak.replace("_bytes", "_ratio_to_erm")))} |')
  return '\n'.join(rows)


def peer_table(result: dict) -> str:
  """Ours against the PyTorch peer, per method (empty when no peer ran)."""
  rows = [r for r in result['methods'].items() if 'peer_step_time_s' in r[1]]
  if not rows:
    return ''
  threads = rows[0][1]['peer'].get('threads')
  out = [f'| method | ours (s) | PyTorch peer (s) | peer / ours | ours CPU (s) | peer CPU (s) |',
         '|---|---|---|---|---|---|']
  for name, r in rows:
    out.append(f'| {name} | {r["step_time_s"]:.3f} | {r["peer_step_time_s"]:.3f} | '
               f'{r["peer_ratio"]:.2f} | {r["cpu_time_s"]:.3f} | {r["peer_cpu_time_s"]:.3f} |')
  return '\n'.join(out) + f'\n\n(Peer: {rows[0][1]["peer"].get("framework", "")}, ' \
      f'{threads} thread(s); peer / ours > 1 means ours is faster.)'


def title(result: dict) -> str:
  what = ('compiled step memory only (not timed)' if result.get('memory_only') else
          f'median of {result["timed_steps_per_method"]} steps')
  if result.get('traced'):
    what += ' (timed with per-instruction tracing on)'
  return f'{result["model"]}, batch {result["batch_size"]}, {result["device"]}, ' \
         f'JAX {result["jax"]}, {what}'


def table(result: dict) -> str:
  """The Markdown table(s) that fit the result (timed, or memory only; peers if any)."""
  if result.get('memory_only'):
    return memory_table(result)
  peers = peer_table(result)
  return markdown_table(result) + ('\n\n' + peers if peers else '')


# ---- per-part profile -------------------------------------------------------
def profile_parts(model_name: str, batch_size: int, image_size: int = 32, repeats: int = 5,
                  top_from: Optional[str] = None) -> dict:
  """Median wall / CPU seconds of the pieces a meta step is made of.

  Each entry is one jitted function of (params, images) returning everything
  it computes (so nothing is dead code or constant-folded); the cost of a
  piece is the difference between two entries. top_from: the first layer
  group of the 'top' set (default: the last residual block).
  """
  config = make_config(model_name, batch_size, image_size, method_spec('erm'), {})
  model = create_model(config, 10)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), images[:2], train=False)
  params, stats = variables['params'], variables['batch_stats']
  names = layer_names(params)
  top = layer_sets.residual_blocks(names)[-1] if top_from is None else top_from
  first_top = next(i for i, n in enumerate(names) if n.startswith(top))
  top_layers = names[first_top:]
  tangent = jax.tree.map(lambda a: 1e-2 * jnp.ones_like(a), params)
  top_tangent = {k: v for k, v in mg.flat_params(tangent).items()
                 if mg.layer_of(k) in top_layers}

  def logits_fn(p, x):
    out, _ = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                         mutable=['batch_stats'])
    return out

  def loss_fn(p, x):
    return jnp.mean(cross_entropy(logits_fn(p, x), labels))

  def linearised(p, x):
    logits, jvp = jax.linearize(lambda q: logits_fn(q, x), p)
    vjp = jax.linear_transpose(jvp, p)
    return logits, jvp, lambda c: vjp(c)[0]

  def virtual(p, x):
    logits, jvp, vjp = linearised(p, x)
    return logits, jvp, vjp, vjp(jax.nn.softmax(logits) / batch_size)

  def two_vjps(p, x):
    logits, _, vjp, g1 = virtual(p, x)
    return g1, vjp(jax.nn.softmax(2 * logits) / batch_size)

  def jvp_all(p, x):
    _, jvp, _, g1 = virtual(p, x)
    return g1, jvp(tangent)

  def jvp_top(p, x):
    g1 = virtual(p, x)[3]
    return g1, mg.directional_losses(lambda q: cross_entropy(logits_fn(q, x), labels), p,
                                     top_tangent)

  parts = {
      'forward (train mode)': loss_fn,
      'forward + backward (ERM core)': jax.value_and_grad(loss_fn),
      'linearize + VJP (virtual step)': lambda p, x: virtual(p, x)[3],
      'linearize + 2 VJPs (virtual + actual)': two_vjps,
      'linearize + VJP + JVP all (linearized)': jvp_all,
      f'linearize + VJP + JVP from {top} (restricted)': jvp_top,
      'val forward + backward, all layers': jax.value_and_grad(loss_fn),
      f'val forward + backward from {top}': lambda p, x: mg.restricted_value_and_grad(
          lambda q: loss_fn(q, x), p, top_layers),
  }
  out = {}
  for name, fn in parts.items():
    f = jax.jit(fn)
    jax.block_until_ready(f(params, images))
    walls, cpus = [], []
    for _ in range(repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(f(params, images))
      walls.append(time.perf_counter() - t0)
      cpus.append(time.process_time() - c0)
    out[name] = {'wall_s': float(np.median(walls)), 'cpu_s': float(np.median(cpus))}
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet32', choices=sorted(MODELS))
  parser.add_argument('--batch_size', type=int, default=100)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--methods', default='erm,mwnet,famus,famus_static',
                      help=f'comma-separated, from {sorted(method_specs())}')
  parser.add_argument('--steps', type=int, default=10, help='timed steps per method')
  parser.add_argument('--settle_steps', type=int, default=None,
                      help='override the settling steps of methods that settle')
  parser.add_argument('--set', action='append', default=[],
                      help='extra config override for every method, field=value (JSON value)')
  parser.add_argument('--profile', action='store_true', help='also time the parts of a step')
  parser.add_argument('--peak_memory', action='store_true',
                      help='also measure each method\'s peak memory in a fresh child process')
  parser.add_argument('--out', default='',
                      help='write the results as JSON here (and the table next to it as .md)')
  parser.add_argument('--memory_only', action='store_true',
                      help='only compile each step and report its XLA memory (no timing)')
  parser.add_argument('--peers', default='', help="'torch': also time the PyTorch peer of "
                      'each method in the same rounds (needs the [peers] extra)')
  parser.add_argument('--threads', type=int, default=1,
                      help='threads of the PyTorch peer (pin the process with taskset)')
  parser.add_argument('--trace', action='store_true',
                      help='also record XLA:CPU time per instruction of 2 more steps per method '
                      'and print it by category')
  parser.add_argument('--memory_child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.trace:  # read when JAX starts its backend, i.e. at the first computation below
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                               + f' --{xla_trace.TRACEME_OPTION}=true').strip()
  if args.memory_child:
    _memory_child(args.memory_child)
    return None
  log = lambda s: print(s, file=sys.stderr, flush=True)  # pylint: disable=g-long-lambda
  extra = {}
  for item in args.set:
    key, value = item.split('=', 1)
    try:
      extra[key] = json.loads(value)
    except json.JSONDecodeError:
      extra[key] = value
  if args.memory_only:
    result = memory_only(args.model, args.batch_size, args.methods.split(','),
                         args.image_size, extra, log=log)
  else:
    result = benchmark(args.model, args.batch_size, args.methods.split(','), args.steps,
                       args.image_size, args.settle_steps, extra, log=log,
                       peak_memory=args.peak_memory,
                       peers=[p for p in args.peers.split(',') if p], threads=args.threads,
                       trace=args.trace)
  if args.profile:
    result['profile'] = profile_parts(args.model, args.batch_size, args.image_size)
  print(title(result))
  print(table(result))
  if args.trace:
    print('\n' + trace_table(result))
  if 'profile' in result:
    print('\n| part | wall (s) | CPU (s) |\n|---|---|---|')
    for name, r in result['profile'].items():
      print(f'| {name} | {r["wall_s"]:.3f} | {r["cpu_s"]:.3f} |')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2, default=lambda o: np.asarray(o).tolist())
    with open(os.path.splitext(args.out)[0] + '.md', 'w') as f:
      f.write(title(result) + '\n\n' + table(result) + '\n')
      if args.trace:
        f.write('\n' + trace_table(result) + '\n')
  return result


if __name__ == '__main__':
  main()
