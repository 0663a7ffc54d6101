"""Plots and a Markdown report from finished runs and step-time benchmarks.

  python -m famus_jax.tools.report runs/grid bench_resnet32.json --out=results/

Each PATH is a run workdir (config.json + metrics.jsonl, usually summary.json;
what `famus_jax.train.trainer` writes), a directory whose immediate
subdirectories are run workdirs, a FaMUS estimator-quality workdir
(config.json + quality.jsonl, from `python -m famus_jax.tools.quality`), or a
benchmark JSON file (`python -m famus_jax.tools.benchmark --out=F.json`).

Writes in --out (a plot is skipped, with one printed line why, when no input
has its data):

  accuracy_vs_time.png      test top-1 accuracy against training time, one
                            panel per noise setting, one line per run
                            (FaMUS paper Fig. 1a).
  weights_<setting>.png     per method, density histograms of the example
                            weights of clean vs mislabelled examples, early
                            and late in training (FaMUS Fig. 5).
  famus_sampled_layers.png  fraction of training steps in which each layer
                            took part in FaMUS's meta gradient
                            (FaMUS supplement Fig. 2).
  fsr_purity.png            purity of FSR's clean dictionary against epoch
                            (FSR Fig. 6).
  pseudo_clean_division.png precision and recall of each co-trained member's
                            pseudo-clean set against epoch (the hidden
                            clean flags; FaMUS supplement Alg. 2).
  meta_gradient_quality.png cosine similarity and relative error of the
                            approximate meta gradients against the exact one
                            (FaMUS Fig. 1c / Fig. 4 in spirit).
  benchmark_ratios.png      step time relative to ERM, per benchmark file.
  report.md                 accuracy tables per setting and a pivot over
                            settings, estimator-quality and benchmark tables,
                            links to the figures.

A run's setting is (dataset, noise type, noise rate, imbalance factor); its
method label is config.method, 'famus(l2r)' for FaMUS over L2R and
'famus[<strategy>]' for a layer strategy other than 'learned'. Runs without
summary.json are unfinished: plotted, and flagged in the tables.
"""

import argparse
import collections
import dataclasses
import json
import os
import re
import sys
import textwrap
from typing import Optional

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import lines as mlines  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import patches  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from famus_jax import config as schema  # pylint: disable=wrong-import-position
from famus_jax.tools import benchmark  # pylint: disable=wrong-import-position
from famus_jax.train.logbook import read_metrics  # pylint: disable=wrong-import-position

DPI = 120
MAX_WIDTH_IN = 12.0
EARLY_LATE_FRACTION = 0.2
METHOD_ORDER = ('erm', 'mwnet', 'l2r', 'famus', 'fsr')
METHOD_COLOURS = {'erm': '#444444', 'mwnet': 'tab:blue', 'l2r': 'tab:orange',
                  'famus': 'tab:green', 'fsr': 'tab:red'}
EXTRA_COLOURS = ('tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray')
ESTIMATOR_ORDER = ('learned', 'random', 'block', 'head')
ESTIMATOR_COLOURS = {'learned': 'tab:green', 'random': 'tab:purple', 'block': 'tab:brown',
                     'head': '#444444'}
CLEAN_COLOUR, NOISY_COLOUR = 'tab:blue', 'tab:red'
NOISE_ABBREV = {'symmetric': 'sym', 'asymmetric': 'asym', 'none': 'clean'}


# ---- inputs -----------------------------------------------------------------
def _read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_jsonl(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


@dataclasses.dataclass
class RunDir:
  """One workdir: its config, summary (None while unfinished) and logged events."""
  workdir: str
  config: dict
  summary: Optional[dict]
  events: list
  quality: list
  quality_summary: Optional[dict]
  variant_tags: tuple = ()      # set by `tag_variants`: fields that set this run apart

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))

  @property
  def finished(self) -> bool:
    return self.summary is not None

  @property
  def has_metrics(self) -> bool:
    return bool(self.events)

  @property
  def seed(self):
    return self.config.get('seed', 0)

  @property
  def setting(self) -> tuple:
    c = self.config
    return (c.get('dataset', '?'), c.get('noise_type', 'none'), float(c.get('noise_rate', 0.0)),
            float(c.get('imbalance_factor', 1.0)), schedule_label(c))

  @property
  def method(self) -> str:
    return method_label(self.config, self.variant_tags)

  def of(self, event: str) -> list:
    """The events of one kind, in order."""
    return [e for e in self.events if e.get('event') == event]

  @property
  def total_steps(self) -> int:
    if self.summary and self.summary.get('steps'):
      return int(self.summary['steps'])
    return max([int(e.get('step', 0)) for e in self.events] or [0])

  @property
  def realised_noise_rate(self) -> Optional[float]:
    if self.summary and self.summary.get('realised_noise_rate') is not None:
      return float(self.summary['realised_noise_rate'])
    data = self.of('data')
    return data[0].get('realised_noise_rate') if data else None


def is_run_dir(path: str) -> bool:
  """A run workdir (metrics.jsonl) or an estimator-quality workdir (quality.jsonl)."""
  has = lambda name: os.path.isfile(os.path.join(path, name))
  return os.path.isdir(path) and has('config.json') and (has('metrics.jsonl')
                                                          or has('quality.jsonl'))


def with_schema_defaults(config: Optional[dict]) -> dict:
  """A run's config.json over the schema's defaults (famus_jax/config.py).

  Fields a run's record lacks (written by an older version) read as the one
  default the library declares, not as a second default written here.
  """
  def merge(base, over):
    out = dict(base)
    for key, value in (over or {}).items():
      out[key] = merge(base[key], value) if isinstance(base.get(key), dict) else value
    return out
  return merge(schema.get_config().to_dict(), config)


def load_run(workdir: str) -> RunDir:
  """Everything the report reads from one workdir."""
  join = lambda name: os.path.join(workdir, name)
  events = read_metrics(workdir) if os.path.exists(join('metrics.jsonl')) else []
  return RunDir(workdir=workdir, config=with_schema_defaults(_read_json(join('config.json'))),
                summary=_read_json(join('summary.json')), events=events,
                quality=_read_jsonl(join('quality.jsonl')),
                quality_summary=_read_json(join('quality_summary.json')))


def load_inputs(paths: list) -> tuple:
  """(runs, benchmarks) from the command line's paths; ValueError names a bad path."""
  runs, benchmarks = [], []
  for path in paths:
    if os.path.isfile(path) and path.endswith('.json'):
      data = _read_json(path)
      if not isinstance(data, dict) or 'methods' not in data:
        raise ValueError(f'{path}: a .json input must be a benchmark result (a top-level '
                         f'"methods" key, from python -m famus_jax.tools.benchmark --out=F.json)')
      benchmarks.append((path, data))
    elif is_run_dir(path):
      runs.append(load_run(path))
    elif os.path.isdir(path):
      subdirs = sorted(os.path.join(path, d) for d in os.listdir(path))
      found = [d for d in subdirs if is_run_dir(d)]
      for d in subdirs:
        if os.path.isdir(d) and d not in found:
          print(f'{d}: no config.json + metrics.jsonl yet (a run just starting?); skipped')
      if not found:
        raise ValueError(f'{path}: expected a run workdir (config.json + metrics.jsonl), '
                         f'a directory of run workdirs, or a benchmark .json file; this '
                         f'directory is none of these')
      runs += [load_run(d) for d in found]
    else:
      raise ValueError(f'{path}: expected a run workdir (config.json + metrics.jsonl), a '
                       f'directory of run workdirs, or a benchmark .json file; '
                       f'{"no such path" if not os.path.exists(path) else "not one of these"}')
  tag_variants(runs)
  return runs, benchmarks


# ---- labels and colours -----------------------------------------------------
# The config fields that can tell runs of one method apart (besides the named tags below).
VARIANT_FIELDS = {
    'erm': (),
    'mwnet': ('meta.', 'mwnet.', 'meta_batch_size', 'meta_gradient'),
    'l2r': ('meta.', 'l2r.', 'meta_batch_size', 'meta_gradient'),
    'famus': ('meta.', 'mwnet.', 'l2r.', 'famus.', 'meta_batch_size'),
    'fsr': ('fsr.',),
}
# Fields already shown by a named tag of `method_label`.
NAMED_TAG_FIELDS = ('meta.actual_step', 'fsr.mixup_form', 'famus.base', 'famus.strategy')


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def tag_variants(runs: list) -> None:
  """Sets `variant_tags` of runs that differ from the other runs of their method and setting.

  Among the runs of one method (config.method) in one setting, every variant field
  (`VARIANT_FIELDS`) whose value is not the same for all of them tags the runs that do
  not have the reference value: the schema default where a run has it, else the most
  common value. E.g. an ablation `--config.fsr.relabel_momentum=0.1` next to default FSR
  runs reads 'fsr[relabel_momentum=0.1]', so it is never averaged with them.
  """
  defaults = _flat(schema.get_config().to_dict())
  groups = collections.defaultdict(list)
  for run in runs:
    groups[(run.setting, run.config.get('method', '?'))].append(run)
  for (_, method), members in groups.items():
    prefixes = VARIANT_FIELDS.get(method, ())
    flats = [_flat(r.config) for r in members]
    keys = sorted({k for f in flats for k in f if k.startswith(prefixes)}
                  - set(NAMED_TAG_FIELDS))
    for key in keys:
      values = [json.dumps(f.get(key), sort_keys=True) for f in flats]
      if len(set(values)) < 2:
        continue
      default = json.dumps(defaults.get(key), sort_keys=True)
      reference = (default if default in values
                   else collections.Counter(values).most_common(1)[0][0])
      short = key.split('.', 1)[1] if '.' in key else key
      for run, value, f in zip(members, values, flats):
        if value != reference:
          run.variant_tags = run.variant_tags + (f'{short}={f.get(key)}',)


def method_label(config: dict, extra_tags: tuple = ()) -> str:
  """config.method with what tells its variants apart.

  FaMUS's base ('famus(l2r)') and non-learned strategy ('famus[all]'); the
  meta methods' actual step when it is 'reuse' ('mwnet[reuse]'); FSR's MixUp
  form when it is one pass ('fsr[one_pass]'); a meta method on the co-trained pair's
  pseudo-clean meta sets ('famus[pseudo_clean]', with the semi-supervised step
  'famus[pseudo_clean,semi]'); then `extra_tags` (`tag_variants`).
  """
  method = config.get('method', '?')
  tags = []
  if method == 'famus':
    famus = config.get('famus') or {}
    if famus.get('base') == 'l2r':
      method = 'famus(l2r)'
    if famus.get('strategy', 'learned') != 'learned':
      tags.append(famus['strategy'])
  if method in ('mwnet', 'famus') and (config.get('meta') or {}).get('actual_step') == 'reuse':
    tags.append('reuse')
  if method == 'fsr' and (config.get('fsr') or {}).get('mixup_form') == 'one_pass':
    tags.append('one_pass')
  if method != 'dividemix' and config.get('meta_set') == 'pseudo_clean':
    tags.append('pseudo_clean')
    if (config.get('cotrain') or {}).get('semi_supervised'):
      tags.append('semi')
  tags += list(extra_tags)
  return method + (f'[{",".join(tags)}]' if tags else '')


def schedule_label(config: dict) -> str:
  """Model and run length, e.g. 'ResNet-8, 8000 imgs, 5 ep' (runs compare only within one)."""
  model = config.get('model', '?')
  if model == 'resnet':
    model = f'ResNet-{config.get("depth")}'
  elif model == 'wide_resnet':
    model = f'WRN-{config.get("depth")}-{config.get("width")}'
  parts = [model]
  if config.get('train_subset'):
    parts.append(f'{config["train_subset"]} imgs')
  steps = config.get('num_steps')
  parts.append(f'{steps} steps' if steps else f'{config.get("num_epochs", "?")} ep')
  return ', '.join(parts)


def setting_label(setting: tuple) -> str:
  """E.g. 'fashion_mnist sym 40% (ResNet-8, 5 ep)', 'cifar10 asym 40% LT x100 (...)'."""
  dataset, noise_type, rate, imbalance = setting[:4]
  label = dataset if noise_type == 'none' else (
      f'{dataset} {NOISE_ABBREV.get(noise_type, noise_type)} {100 * rate:g}%')
  label += f' LT x{imbalance:g}' if imbalance > 1 else ''
  return label + (f' ({setting[4]})' if len(setting) > 4 else '')


def slug(text: str) -> str:
  """File-name-safe version of a label."""
  return re.sub(r'[^A-Za-z0-9]+', '_', text.replace('%', '')).strip('_')


def _base_method(label: str) -> str:
  return re.split(r'[(\[_]', label)[0]


def method_sort_key(label: str) -> tuple:
  base = _base_method(label)
  rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
  return (rank, label != base, label)


def method_colours(labels) -> dict:
  """Fixed colour for the five methods, the rest of tab10 in sorted order for variants."""
  colours, extra = {}, 0
  for label in sorted(set(labels), key=method_sort_key):
    if label in METHOD_COLOURS:
      colours[label] = METHOD_COLOURS[label]
    else:
      colours[label] = EXTRA_COLOURS[extra % len(EXTRA_COLOURS)]
      extra += 1
  return colours


def _settings(runs: list) -> list:
  return sorted({r.setting for r in runs})


def _save(fig, out: str, name: str, written: list, rect=None) -> str:
  """tight_layout (leaving `rect` free space for a figure legend), write at DPI, close."""
  fig.tight_layout(rect=rect)
  path = os.path.join(out, name)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  written.append(path)
  return path


def _legend_rows(n: int, ncol: int) -> int:
  return -(-n // max(ncol, 1))


def _legend_below(fig, handles: list, labels: list, ncol: int) -> tuple:
  """A figure legend under the panels; returns the tight_layout rect that leaves it room."""
  fig.legend(handles, labels, loc='lower center', ncol=ncol, fontsize='small', frameon=False)
  return (0, (0.12 + 0.2 * _legend_rows(len(labels), ncol)) / fig.get_figheight(), 1, 1)


def _skip(skipped: dict, name: str, why: str) -> None:
  print(f'{name}: skipped ({why})')
  skipped[name] = why


def _grid(n: int, max_cols: int = 3) -> tuple:
  cols = min(n, max_cols)
  return -(-n // cols), cols


# ---- 1. accuracy against training time -------------------------------------
def eval_curve(run: RunDir) -> tuple:
  """(training seconds, test accuracy %) at each eval; time from train_time_s, else
  step * summary.mean_step_time_s (older runs); empty when neither is known."""
  evals = run.of('eval')
  step_time = (run.summary or {}).get('mean_step_time_s')
  times, accs = [], []
  for e in evals:
    if 'train_time_s' in e:
      times.append(float(e['train_time_s']))
    elif step_time is not None:
      times.append(e['step'] * float(step_time))
    else:
      continue
    accs.append(100.0 * e['test_accuracy'])
  return np.asarray(times), np.asarray(accs)


def median_window_step(run: RunDir):
  """Median seconds per step over the windows between consecutive evals (None if < 2 evals).

  Window k: (train_time_s[k+1] - train_time_s[k]) / (step[k+1] - step[k]). The first eval
  (which holds the compile) starts no window, and a window that holds a pause of the process
  (SIGSTOP, a suspended laptop) or a resume's recompile is one outlier the median ignores,
  unlike summary.json's mean_step_time_s.
  """
  evals = [e for e in run.of('eval') if 'train_time_s' in e]
  steps = np.asarray([e['step'] for e in evals], np.float64)
  times = np.asarray([e['train_time_s'] for e in evals], np.float64)
  keep = np.diff(steps) > 0
  if not keep.any():
    return None
  return float(np.median(np.diff(times)[keep] / np.diff(steps)[keep]))


def plot_accuracy_vs_time(runs: list, colours: dict, out: str, written: list,
                          skipped: dict) -> None:
  """One panel per setting, one line per run coloured by method (FaMUS Fig. 1a)."""
  name = 'accuracy_vs_time.png'
  curves = [(r, *eval_curve(r)) for r in runs]
  curves = [c for c in curves if len(c[1])]
  if not curves:
    return _skip(skipped, name, 'no run has eval events with a training time')
  settings = _settings([c[0] for c in curves])
  rows, cols = _grid(len(settings))
  fig, axes = plt.subplots(rows, cols, figsize=(min(4.2 * cols, MAX_WIDTH_IN), 3.3 * rows + 0.6),
                           squeeze=False)
  for ax, setting in zip(axes.flat, settings):
    for run, times, accs in curves:
      if run.setting == setting:
        ax.plot(times, accs, marker='o', markersize=3, color=colours[run.method],
                linestyle='-' if run.finished else '--', alpha=0.85)
    ax.set_title(textwrap.fill(setting_label(setting), 42), fontsize='medium')
    ax.set_xlabel('training time, compile included (s)')
    ax.set_ylabel('test top-1 accuracy (%)')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(settings):]:
    ax.set_visible(False)
  methods = sorted({c[0].method for c in curves}, key=method_sort_key)
  handles = [mlines.Line2D([], [], color=colours[m], marker='o', markersize=3) for m in methods]
  if not all(c[0].finished for c in curves):
    handles.append(mlines.Line2D([], [], color='grey', linestyle='--'))
    methods = methods + ['unfinished run']
  rect = _legend_below(fig, handles, methods, ncol=min(len(methods), 6))
  _save(fig, out, name, written, rect=rect)


# ---- 2. example weights, clean vs mislabelled -------------------------------
def _reweighted(event: dict) -> bool:
  """Whether this batch's weights are not all exactly 1 (ERM, FSR's warm-up: all 1)."""
  return not np.all(np.asarray(event['weights'], np.float64) == 1.0)


def split_weight_events(run: RunDir) -> tuple:
  """(early, late) weights events of a run in which the weights are not all 1.

  early: from the first such event on, the first 20% of the remaining steps;
  late: the last 20% of the run's steps. Each holds at least one event when the
  run has any (the first / last re-weighted one).
  """
  events = [e for e in run.of('weights') if _reweighted(e)]
  if not events:
    return [], []
  total = max(run.total_steps, events[-1]['step'])
  start = events[0]['step']
  early_end = start + EARLY_LATE_FRACTION * (total - start)
  late_start = total - EARLY_LATE_FRACTION * total
  early = [e for e in events if e['step'] <= early_end] or events[:1]
  late = [e for e in events if e['step'] >= late_start] or events[-1:]
  return early, late


def _pool(events: list) -> tuple:
  """(clean weights, mislabelled weights) of a list of weights events."""
  if not events:
    return np.zeros(0), np.zeros(0)
  w = np.concatenate([np.asarray(e['weights'], np.float64) for e in events])
  noisy = np.concatenate([np.asarray(e['noisy'], bool) for e in events])
  return w[~noisy], w[noisy]


def weight_split(runs: list) -> dict:
  """setting -> method -> {'early': (clean, noisy), 'late': ..., 'early_steps', 'late_steps'}.

  Seeds are pooled; methods whose logged weights are all 1 (ERM) are left out.
  """
  out = {}
  for run in runs:
    early, late = split_weight_events(run)
    if not early or run.method == 'erm':
      continue
    entry = out.setdefault(run.setting, {}).setdefault(
        run.method, {'early': [], 'late': [], 'early_steps': {}, 'late_steps': {}})
    entry['early'] += early
    entry['late'] += late
    entry['early_steps'][run.name] = [e['step'] for e in early]
    entry['late_steps'][run.name] = [e['step'] for e in late]
  for methods in out.values():
    for entry in methods.values():
      entry['early'], entry['late'] = _pool(entry['early']), _pool(entry['late'])
  return out


def _histograms(ax, clean: np.ndarray, noisy: np.ndarray, bins: np.ndarray) -> None:
  hi = bins[-1]
  for values, colour, label in ((clean, CLEAN_COLOUR, 'clean'),
                                (noisy, NOISY_COLOUR, 'mislabelled')):
    if not len(values):
      continue
    ax.hist(np.clip(values, 0, hi), bins=bins, density=True, alpha=0.45, color=colour,
            label=f'{label} (n={len(values)}, mean {values.mean():.2f})')
    ax.hist(np.clip(values, 0, hi), bins=bins, density=True, histtype='step', color=colour)
  ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # headroom: the legend sits above the bars
  ax.legend(fontsize='small', loc='upper right')


def plot_weights(runs: list, out: str, written: list, skipped: dict) -> dict:
  """weights_<setting>.png: rows = methods, columns = early / late (FaMUS Fig. 5)."""
  split = weight_split(runs)
  if not split:
    _skip(skipped, 'weights_*.png', 'no run has weights events with weights other than 1')
  for setting, methods in sorted(split.items()):
    names = sorted(methods, key=method_sort_key)
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.8 * len(names) + 0.4), squeeze=False)
    for row, method in zip(axes, names):
      entry = methods[method]
      every = np.concatenate([*entry['early'], *entry['late']])
      bins = np.linspace(0.0, max(float(np.percentile(every, 99.5)), 1.5) * 1.05, 31)
      for ax, phase in zip(row, ('early', 'late')):
        _histograms(ax, *entry[phase], bins)
        steps = sorted({s for v in entry[f'{phase}_steps'].values() for s in v})
        ax.set_title(f'{method}, {phase} (steps {steps[0]}-{steps[-1]})', fontsize='medium')
        ax.set_xlabel('example weight (batch mean = 1)')
        ax.set_ylabel('density')
    fig.suptitle(textwrap.fill(
        f'Example weights, {setting_label(setting)} (seeds pooled; bins shared per method, '
        f'weights beyond the last bin counted in it)', 100), fontsize='medium')
    _save(fig, out, f'weights_{slug(setting_label(setting))}.png', written)
  return split


# ---- 3. FaMUS: how often each layer was sampled -----------------------------
def sampled_layers(run: RunDir) -> Optional[dict]:
  """{'layers': [...], 'fraction': [...], 'always_on': [...], 'step': S} or None.

  fraction = the last cumulative active count of each candidate layer / that
  event's step; always-on layers count as 1; layers in network order.
  """
  method = run.of('method')
  trains = [e for e in run.of('train') if 'famus_active_counts' in e]
  if not method or not trains or 'famus_candidates' not in method[0]:
    return None
  info, last = method[0], trains[-1]
  counts = dict(zip(info['famus_candidates'], last['famus_active_counts']))
  always = list(info.get('famus_always_on', []))
  layers = [n for n in info.get('famus_layers', info['famus_candidates'])
            if n in counts or n in always]
  fraction = [1.0 if n in always else counts[n] / max(last['step'], 1) for n in layers]
  return {'layers': layers, 'fraction': fraction, 'always_on': always, 'step': last['step']}


def _run_label(run: RunDir, with_setting: bool = True) -> str:
  label = f'{run.method} s{run.seed}'
  return f'{label}, {setting_label(run.setting)}' if with_setting else label


def plot_sampled_layers(runs: list, out: str, written: list, skipped: dict) -> dict:
  """Horizontal bars per layer, one bar per run; one panel per network (layer list)."""
  name = 'famus_sampled_layers.png'
  found = {r.workdir: (r, sampled_layers(r)) for r in runs}
  found = {k: v for k, v in found.items() if v[1] is not None}
  if not found:
    _skip(skipped, name, 'no FaMUS run with famus_active_counts and a method event')
    return {}
  networks = collections.defaultdict(list)
  for run, s in found.values():
    networks[tuple(s['layers'])].append((run, s))
  n_layers = max(len(k) for k in networks)
  n_runs = max(len(v) for v in networks.values())
  n_labels = len(found) + 1
  fig, axes = plt.subplots(1, len(networks), squeeze=False, figsize=(
      min(5.5 * len(networks) + 1.0, MAX_WIDTH_IN),
      1.8 + 0.22 * n_layers * max(1.0, n_runs / 2) + 0.2 * _legend_rows(n_labels, 2)))
  palette = plt.get_cmap('tab10')
  handles, labels = [], []
  for ax, (layers, members) in zip(axes[0], networks.items()):
    height = 0.8 / len(members)
    y = np.arange(len(layers))
    for k, (run, s) in enumerate(members):
      always = np.array([n in s['always_on'] for n in layers])
      offset = y - 0.4 + height * (k + 0.5)
      frac = np.asarray(s['fraction'])
      colour = palette(k % 10)
      handles.append(ax.barh(offset[~always], frac[~always], height=height, color=colour))
      labels.append(f'{_run_label(run)} ({s["step"]} steps)')
      if always.any():
        ax.barh(offset[always], frac[always], height=height, color=colour, alpha=0.5,
                hatch='//', edgecolor='white')
    ax.set_yticks(y, [f'{n} (always on)' if n in members[0][1]['always_on'] else n
                      for n in layers], fontsize='small')
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel('fraction of training steps active')
    ax.set_title('FaMUS: candidate layers in the meta gradient\n(network order, input side at '
                 'top)', fontsize='medium')
    ax.grid(axis='x', alpha=0.3)
  handles.append(patches.Patch(facecolor='lightgrey', hatch='//',
                                          edgecolor='white'))
  labels.append('always on (counted as 1)')
  labels = [textwrap.fill(label, 60) for label in labels]
  _save(fig, out, name, written, rect=_legend_below(fig, handles, labels, ncol=1))
  return {r.name: dict(zip(s['layers'], s['fraction'])) for r, s in found.values()}


# ---- 4. FSR dictionary purity -----------------------------------------------
def purity_curve(run: RunDir) -> tuple:
  """(epoch, purity %) from the train events with fsr_dict_purity (NaN ones dropped)."""
  pts = [(e.get('epoch', np.nan), 100.0 * e['fsr_dict_purity']) for e in run.of('train')
         if e.get('fsr_dict_purity') is not None and np.isfinite(e['fsr_dict_purity'])]
  return (np.asarray([p[0] for p in pts]), np.asarray([p[1] for p in pts])) if pts else ((), ())


def plot_fsr_purity(runs: list, out: str, written: list, skipped: dict) -> None:
  """One line per FSR run; dashed: 1 - the run's realised noise rate (FSR Fig. 6)."""
  name = 'fsr_purity.png'
  curves = [(r, *purity_curve(r)) for r in runs]
  curves = [c for c in curves if len(c[1])]
  if not curves:
    return _skip(skipped, name, 'no run logs fsr_dict_purity')
  fig, ax = plt.subplots(figsize=(8.0, 3.8 + 0.2 * _legend_rows(len(curves), 2)))
  palette = plt.get_cmap('tab10')
  for k, (run, epochs, purity) in enumerate(curves):
    colour = palette(k % 10)
    rate = run.realised_noise_rate
    noise = '' if rate is None else f', realised noise {100 * rate:.1f}%'
    ax.plot(epochs, purity, marker='o', markersize=3, color=colour,
            label=f'{_run_label(run)}{noise}')
    if rate is not None:
      ax.axhline(100 * (1 - rate), color=colour, linestyle='--', linewidth=1, alpha=0.7)
  ax.set_xlabel('epoch')
  ax.set_ylabel('dictionary purity (% correct labels)')
  ax.set_title('FSR: purity of the clean dictionary\n(dashed: share of correct labels in the '
               'training set)', fontsize='medium')
  ax.grid(alpha=0.3)
  handles, labels = ax.get_legend_handles_labels()
  _save(fig, out, name, written, rect=_legend_below(fig, handles, labels, ncol=2))


def division_curves(run: RunDir) -> dict:
  """{member: (epochs, precision %, recall %)} from the run's 'division' events (a and b)."""
  events = run.of('division')
  out = {}
  for member in ('a', 'b'):
    pts = [(e['epoch'], 100.0 * e[f'{member}_precision'], 100.0 * e[f'{member}_recall'])
           for e in events if e.get(f'{member}_precision') is not None]
    if pts:
      out[member] = tuple(np.asarray(col) for col in zip(*pts))
  return out


def plot_pseudo_clean(runs: list, out: str, written: list, skipped: dict) -> None:
  """Precision and recall of each co-trained member's pseudo-clean set over epochs.

  Against the hidden clean flags (diagnostics only); one colour per run,
  member a solid, member b dashed; dotted: 1 - the realised noise rate (the
  precision of taking every example).
  """
  name = 'pseudo_clean_division.png'
  curves = [(r, division_curves(r)) for r in runs]
  curves = [c for c in curves if c[1]]
  if not curves:
    return _skip(skipped, name, "no run logs 'division' events (co-trained pairs)")
  fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.8 + 0.2 * _legend_rows(len(curves), 2)))
  palette = plt.get_cmap('tab10')
  for k, (run, members) in enumerate(curves):
    colour = palette(k % 10)
    for member, style in (('a', '-'), ('b', '--')):
      if member not in members:
        continue
      epochs, precision, recall = members[member]
      label = _run_label(run) if member == 'a' else None
      axes[0].plot(epochs, precision, style, marker='o', markersize=3, color=colour, label=label)
      axes[1].plot(epochs, recall, style, marker='o', markersize=3, color=colour)
    rate = run.realised_noise_rate
    if rate is not None:
      axes[0].axhline(100 * (1 - rate), color=colour, linestyle=':', linewidth=1, alpha=0.7)
  for ax, what in zip(axes, ('precision', 'recall')):
    ax.set_xlabel('epoch (division at its end)')
    ax.set_ylabel(f'{what} of the pseudo-clean set (%)')
    ax.grid(alpha=0.3)
  axes[0].set_title('precision (dotted: share of clean labels)', fontsize='medium')
  axes[1].set_title('recall of the clean examples', fontsize='medium')
  fig.suptitle('Co-trained pairs: pseudo-clean sets against the hidden clean flags '
               '(member a solid, b dashed)', fontsize='medium')
  handles, labels = axes[0].get_legend_handles_labels()
  _save(fig, out, name, written, rect=_legend_below(fig, handles, labels, ncol=2))


# ---- 5. meta-gradient estimator quality -------------------------------------
def _estimators(names) -> list:
  names = set(names)
  return [e for e in ESTIMATOR_ORDER if e in names] + sorted(names - set(ESTIMATOR_ORDER))


def plot_quality(runs: list, out: str, written: list, skipped: dict) -> None:
  """Per quality workdir: cosine and relative error of each estimator against step."""
  name = 'meta_gradient_quality.png'
  found = [r for r in runs if r.quality]
  if not found:
    return _skip(skipped, name, 'no workdir has quality.jsonl')
  fig, axes = plt.subplots(len(found), 3, figsize=(12, 3.6 * len(found) + 0.4), squeeze=False)
  palette = plt.get_cmap('tab10')
  legend = {}
  for (ax_cos, ax_eps, ax_err), run in zip(axes, found):
    names = _estimators(r['estimator'] for r in run.quality)
    for k, est in enumerate(names):
      rows = sorted((r for r in run.quality if r['estimator'] == est), key=lambda r: r['step'])
      steps = [r['step'] for r in rows]
      colour = ESTIMATOR_COLOURS.get(est, palette((k + 4) % 10))
      legend[est], = ax_cos.plot(steps, [r['cosine'] for r in rows], marker='o', markersize=3,
                                 color=colour, linewidth=1)
      if all('eps_cosine' in r for r in rows):
        ax_eps.plot(steps, [r['eps_cosine'] for r in rows], marker='o', markersize=3,
                    color=colour, linewidth=1)
      ax_err.plot(steps, [max(r['rel_err'], 1e-12) for r in rows], marker='o', markersize=3,
                  color=colour)
    where = textwrap.fill(f'{run.name} ({_run_label(run)})', 45)
    ax_cos.set_title(f'cosine, meta-parameter gradient\n{where}', fontsize='medium')
    ax_cos.set_ylabel('cosine similarity')
    ax_eps.set_title(f'cosine, per-example dL/d eps\n{where}', fontsize='medium')
    ax_eps.set_ylabel('cosine similarity')
    ax_err.set_title(f'relative error ||g_hat - g|| / ||g||\n{where}', fontsize='medium')
    ax_err.set_ylabel('relative error (log scale)')
    ax_err.set_yscale('log')
    for ax in (ax_cos, ax_eps, ax_err):
      ax.set_xlabel('training step')
      ax.grid(alpha=0.3)
  names = _estimators(legend)
  rect = _legend_below(fig, [legend[n] for n in names], [f'estimator: {n}' for n in names],
                       ncol=len(names))
  _save(fig, out, name, written, rect=rect)


# ---- 6. benchmark ratios ----------------------------------------------------
def benchmark_label(result: dict) -> str:
  return f'{result.get("model", "?")}, batch {result.get("batch_size", "?")}'


def plot_benchmarks(benchmarks: list, out: str, written: list, skipped: dict) -> None:
  """Grouped bars of step time / ERM's, one group per benchmark file."""
  name = 'benchmark_ratios.png'
  usable = [(p, b) for p, b in benchmarks
            if any(m.get('ratio_to_erm') is not None for m in b['methods'].values())]
  if not usable:
    return _skip(skipped, name, 'no benchmark file has ratio_to_erm')
  methods = []
  for _, b in usable:
    methods += [m for m in b['methods'] if m not in methods]
  colours = method_colours(methods)
  width = 0.8 / len(methods)
  fig, ax = plt.subplots(figsize=(min(2.0 + 0.45 * len(methods) * len(usable) + 2.5,
                                      MAX_WIDTH_IN), 4.2))
  for k, method in enumerate(methods):
    xs, ys = [], []
    for g, (_, b) in enumerate(usable):
      ratio = b['methods'].get(method, {}).get('ratio_to_erm')
      if ratio is not None:
        xs.append(g - 0.4 + width * (k + 0.5))
        ys.append(ratio)
    bars = ax.bar(xs, ys, width=width, color=colours[method], label=method)
    ax.bar_label(bars, fmt='%.2f', fontsize='x-small', padding=1)
  ax.axhline(1.0, color='black', linestyle='--', linewidth=1)
  ax.set_xticks(range(len(usable)), [benchmark_label(b) for _, b in usable])
  ax.set_ylabel('step time / ERM step time (x)')
  ax.set_title('Training step time relative to ERM (median; dashed: ERM)', fontsize='medium')
  ax.margins(y=0.12)
  ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
  _save(fig, out, name, written)


# ---- tables -----------------------------------------------------------------
def _accuracies(run: RunDir) -> tuple:
  """(best, last) test accuracy in %: summary.json, else the eval events so far."""
  if run.finished and run.summary.get('best_test_accuracy') is not None:
    return 100 * run.summary['best_test_accuracy'], 100 * run.summary['last_test_accuracy']
  accs = [100 * e['test_accuracy'] for e in run.of('eval')]
  return (max(accs), accs[-1]) if accs else (None, None)


def _mean_std(values: list) -> tuple:
  """Mean and sample standard deviation (ddof=1; None for one value)."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  a = np.asarray(values, np.float64)
  return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def _mean(values: list) -> Optional[float]:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def aggregate(runs: list) -> dict:
  """setting label -> method -> aggregated numbers over seeds.

  Finished runs are aggregated; a (setting, method) with no finished run uses
  its unfinished runs' eval events and is marked unfinished.
  """
  groups = collections.defaultdict(list)
  for run in runs:
    if run.has_metrics:
      groups[(run.setting, run.method)].append(run)
  out = {}
  for (setting, method), members in sorted(groups.items(),
                                           key=lambda kv: (kv[0][0], method_sort_key(kv[0][1]))):
    members = sorted(members, key=lambda r: str(r.seed))
    seeds = [r.seed for r in members]
    if len(set(seeds)) < len(seeds):
      print(f'warning: {setting_label(setting)} {method}: repeated seeds {seeds} (runs with '
            f'different configs?): {", ".join(r.workdir for r in members)}')
    used = [r for r in members if r.finished] or members
    best, last = zip(*[_accuracies(r) for r in used])
    summ = [r.summary or {} for r in used]
    wall = [s.get('wall_time_s') for s in summ]
    out.setdefault(setting_label(setting), {})[method] = {
        'seeds': [r.seed for r in members],
        'unfinished_seeds': [r.seed for r in members if not r.finished],
        'aggregated_seeds': [r.seed for r in used],
        'all_unfinished': not any(r.finished for r in members),
        'best': list(best), 'last': list(last),
        'best_mean_std': _mean_std(best), 'last_mean_std': _mean_std(last),
        'step_time_s': _mean([s.get('mean_step_time_s') for s in summ]),
        'median_step_s': _mean([median_window_step(r) for r in used]),
        'wall_time_min': _mean([w / 60 if w is not None else None for w in wall]),
        'weight_clean': _mean([s.get('mean_weight_clean') for s in summ]),
        'weight_noisy': _mean([s.get('mean_weight_noisy') for s in summ]),
        **weight_shape([r for r in used]),
    }
  return out


def weight_shape(runs: list) -> dict:
  """Zero-weight fraction and effective batch size of the logged batches, last half of training.

  Per logged batch with weights w (n,): zero fraction mean(w == 0) (weights are logged to 4
  decimals) and effective batch (sum w)^2 / (n sum w^2) (1 for uniform weights, s/n when s
  weights are equal and the rest 0). Means over the batches logged in the second half of each
  run, then over runs; None without weights events.
  """
  zeros, ess = [], []
  for run in runs:
    events = run.of('weights')
    if not events:
      continue
    half = max(e['step'] for e in events) / 2
    for e in events:
      w = np.asarray(e['weights'], np.float64)
      if e['step'] < half or not w.size or not np.any(w):
        continue
      zeros.append(float(np.mean(w == 0)))
      ess.append(float(np.sum(w) ** 2 / (w.size * np.sum(w ** 2))))
  return {'zero_weight_fraction': _mean(zeros) if zeros else None,
          'effective_batch_fraction': _mean(ess) if ess else None}


def fmt_mean_std(pair: tuple, digits: int = 2) -> str:
  mean, std = pair
  if mean is None:
    return '-'
  return f'{mean:.{digits}f}' if std is None else f'{mean:.{digits}f} ± {std:.{digits}f}'


def _fmt(value, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def _pct(value) -> str:
  return '-' if value is None else f'{100 * value:.0f}'


def accuracy_tables(acc: dict) -> list:
  """Markdown lines: one table per setting and the settings pivot."""
  lines = ['## Test accuracy', '',
           'Mean ± sample standard deviation over seeds (std left out for one seed); runs '
           'without summary.json are "(unfinished)" and only counted where a method has no '
           'finished run (then from their eval events so far).', '']
  for setting, methods in acc.items():
    lines += [f'### {setting}', '',
              '| method | runs (seeds) | best top-1 % | last top-1 % | mean step (s) | '
              'median step (s) | wall-clock (min) | mean weight clean / mislabelled | '
              'zero weights % | effective batch % |',
              '|---|---|---|---|---|---|---|---|---|---|']
    for method, a in methods.items():
      seeds = ', '.join(f's{s} unfinished' if s in a['unfinished_seeds'] else f's{s}'
                        for s in a['seeds'])
      name = f'{method} (unfinished)' if a['all_unfinished'] else method
      lines.append(
          f'| {name} | {len(a["seeds"])} ({seeds}) | {fmt_mean_std(a["best_mean_std"])} | '
          f'{fmt_mean_std(a["last_mean_std"])} | {_fmt(a["step_time_s"], ".3f")} | '
          f'{_fmt(a["median_step_s"], ".3f")} | {_fmt(a["wall_time_min"], ".1f")} | '
          f'{_fmt(a["weight_clean"], ".2f")} / '
          f'{_fmt(a["weight_noisy"], ".2f")} | {_pct(a.get("zero_weight_fraction"))} | '
          f'{_pct(a.get("effective_batch_fraction"))} |')
    lines.append('')
  lines += ['Zero weights and effective batch ((sum w)^2 / (n sum w^2)) are over the batches '
            'logged in the second half of each run. Mean step: summary.json (every timed '
            'step, so it counts any time the process was paused); median step: the median '
            'over the windows between evals (a pause or a resume is one window).', '']
  lines += pivot_table(acc)
  return lines


def pivot_table(acc: dict) -> list:
  """Rows = methods, columns = settings, cells 'last (best)' mean accuracy %."""
  settings = list(acc)
  methods = sorted({m for v in acc.values() for m in v}, key=method_sort_key)
  lines = ['### All settings: last (best) top-1 %, mean over seeds', '',
           '| method | ' + ' | '.join(settings) + ' |', '|---' * (len(settings) + 1) + '|']
  for method in methods:
    cells = []
    for setting in settings:
      a = acc[setting].get(method)
      if a is None or a['last_mean_std'][0] is None:
        cells.append('-')
      else:
        mark = '*' if a['all_unfinished'] else ''
        cells.append(f'{a["last_mean_std"][0]:.2f} ({a["best_mean_std"][0]:.2f}){mark}')
    lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  if any(a['all_unfinished'] for v in acc.values() for a in v.values()):
    lines += ['', '\\* unfinished runs only.']
  return lines + ['']


def quality_tables(runs: list) -> list:
  """Markdown lines: per workdir with quality_summary.json, one row per estimator."""
  found = [r for r in runs if r.quality_summary]
  if not found:
    return []
  lines = ['## Meta-gradient estimator quality', '',
           'Against the exact meta gradient at each check (mean ± std over checks). Cosine '
           'and relative error in the space of the MW-Net meta parameters (the gradient the '
           'meta step applies); per-example cosine: of dL^val/d eps (n,). Norm CV: standard '
           'deviation / mean of ||g_hat|| across checks; draw variance (random): spread of '
           'the estimate across draws on the same batch, relative to ||g||^2.', '']
  for run in found:
    qs = run.quality_summary
    names = _estimators(k for k, v in qs.items() if isinstance(v, dict) and 'cosine_mean' in v)
    exact_cv = (qs.get('exact') or {}).get('norm_cv')
    lines += [f'### {run.name} ({_run_label(run)}, {qs.get("checks", "?")} checks)', '',
              '| estimator | layers used (mean) | cosine | per-example cosine | relative error '
              '| norm ratio | estimate norm CV | draw variance |',
              '|---|---|---|---|---|---|---|---|']
    for est in names:
      q = qs[est]
      lines.append(
          f'| {est} | {_fmt(q.get("mean_layers"), ".1f")} | '
          f'{fmt_mean_std((q.get("cosine_mean"), q.get("cosine_std")), 3)} | '
          f'{fmt_mean_std((q.get("eps_cosine_mean"), q.get("eps_cosine_std")), 3)} | '
          f'{fmt_mean_std((q.get("rel_err_mean"), q.get("rel_err_std")), 3)} | '
          f'{_fmt(q.get("norm_ratio_mean"), ".3f")} | {_fmt(q.get("estimate_norm_cv"), ".3f")} '
          f'| {_fmt(q.get("draw_variance"), ".3g")} |')
    if exact_cv is not None:
      lines += ['', f'Exact meta gradient norm CV: {exact_cv:.3f}.']
    lines.append('')
  return lines


def benchmark_tables(benchmarks: list) -> list:
  """Markdown lines: title and table of each benchmark file."""
  if not benchmarks:
    return []
  lines = ['## Step-time benchmarks', '']
  for path, result in benchmarks:
    lines += [f'**{benchmark.title(result)}** (`{os.path.basename(path)}`)', '',
              benchmark.table(result), '']
  return lines


def _image(path: str, alt: str) -> list:
  return [f'![{alt}]({os.path.basename(path)})', '']


def write_markdown(out: str, runs: list, benchmarks: list, acc: dict, written: list,
                   skipped: dict) -> str:
  """report.md: tables, then each figure under a heading."""
  images = {os.path.basename(p): p for p in written}
  settings = {f'weights_{slug(setting_label(s))}.png': setting_label(s) for s in _settings(runs)}
  lines = ['# Report', '',
           f'Inputs: {len(runs)} workdir(s), {len(benchmarks)} benchmark file(s).', '']
  if acc:
    lines += accuracy_tables(acc)
  titles = [('accuracy_vs_time.png', 'Test accuracy against training time (FaMUS Fig. 1a)')]
  titles += [(n, f'Example weights, {settings.get(n, n[len("weights_"):-4])} (FaMUS Fig. 5)')
             for n in sorted(images) if n.startswith('weights_')]
  titles += [('famus_sampled_layers.png', 'FaMUS: fraction of steps each layer was sampled '
              '(FaMUS supplement Fig. 2)'),
             ('fsr_purity.png', 'FSR dictionary purity (FSR Fig. 6)'),
             ('pseudo_clean_division.png', 'Co-trained pairs: precision and recall of the '
              'pseudo-clean sets (FaMUS supplement Alg. 2)'),
             ('meta_gradient_quality.png', 'Meta-gradient estimator quality')]
  lines += ['## Figures', '']
  for name, title in titles:
    if name in images:
      lines += [f'### {title}', '', *_image(images[name], title)]
  lines += quality_tables(runs)
  lines += benchmark_tables(benchmarks)
  if 'benchmark_ratios.png' in images:
    lines += _image(images['benchmark_ratios.png'], 'step time relative to ERM')
  if skipped:
    lines += ['## Skipped figures', ''] + [f'- {k}: {v}' for k, v in skipped.items()] + ['']
  path = os.path.join(out, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines))
  return path


# ---- entry point ------------------------------------------------------------
def build_report(runs: list, benchmarks: list, out: str) -> dict:
  """All figures and report.md in `out`; returns the paths and the numbers."""
  os.makedirs(out, exist_ok=True)
  written, skipped = [], {}
  with_metrics = [r for r in runs if r.has_metrics]
  colours = method_colours(r.method for r in with_metrics)
  plot_accuracy_vs_time(with_metrics, colours, out, written, skipped)
  split = plot_weights(with_metrics, out, written, skipped)
  layers = plot_sampled_layers(with_metrics, out, written, skipped)
  plot_fsr_purity(with_metrics, out, written, skipped)
  plot_pseudo_clean(with_metrics, out, written, skipped)
  plot_quality(runs, out, written, skipped)
  plot_benchmarks(benchmarks, out, written, skipped)
  acc = aggregate(runs)
  report = write_markdown(out, runs, benchmarks, acc, written, skipped)
  return {'report': report, 'figures': written, 'skipped': skipped, 'accuracy': acc,
          'sampled_layers': layers,
          'weight_steps': {setting_label(s): {m: {'early': e['early_steps'],
                                                  'late': e['late_steps']}
                                              for m, e in methods.items()}
                           for s, methods in split.items()}}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
      prog='python -m famus_jax.tools.report',
      description='Plots and a Markdown report from run workdirs and benchmark JSON files.')
  parser.add_argument('paths', nargs='+', metavar='PATH',
                      help='run workdir, directory of run workdirs, or benchmark .json')
  parser.add_argument('--out', required=True, help='output directory (created)')
  args = parser.parse_args(argv)
  try:
    runs, benchmarks = load_inputs(args.paths)
  except ValueError as e:
    raise SystemExit(f'famus_jax.tools.report: {e}') from e
  result = build_report(runs, benchmarks, args.out)
  print(f'wrote {result["report"]} and {len(result["figures"])} figures')
  return result


if __name__ == '__main__':
  main(sys.argv[1:])
