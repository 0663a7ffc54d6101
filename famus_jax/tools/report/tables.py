"""The report's numbers over seeds and its Markdown tables (accuracy, estimator quality,
benchmarks).

Mean ± sample standard deviation (ddof=1) over seeds throughout; the
memorisation grid's table is `grid`'s.
"""

import collections
import os
from typing import Optional

import numpy as np

from famus_jax import catalogue
from famus_jax.tools import benchmark
from famus_jax.tools.report import series
from famus_jax.tools.report.labels import method_sort_key, run_label, setting_label


def mean_std(values: list) -> tuple:
  """Mean and sample standard deviation (ddof=1; None for one value) of the non-None values."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  a = np.asarray(values, np.float64)
  return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def mean(values: list) -> Optional[float]:
  """Mean of the non-None values (None when there is none)."""
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def fmt_mean_std(pair: tuple, digits: int = 2, sign: str = '') -> str:
  """'m ± s', 'm' without a std, '-' without a mean; sign='+' writes the mean's sign."""
  m, s = pair[:2]
  if m is None:
    return '-'
  return f'{m:{sign}.{digits}f}' if s is None else f'{m:{sign}.{digits}f} ± {s:.{digits}f}'


def fmt(value, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def pct(value, digits: int = 0) -> str:
  return '-' if value is None else f'{100 * value:.{digits}f}'


def accuracies(run) -> tuple:
  """(best, last) test accuracy in %: summary.json, else the eval events so far."""
  if run.finished and run.summary.get('best_test_accuracy') is not None:
    return 100 * run.summary['best_test_accuracy'], 100 * run.summary['last_test_accuracy']
  accs = [100 * e[catalogue.TEST_ACCURACY] for e in run.of(catalogue.EVAL)]
  return (max(accs), accs[-1]) if accs else (None, None)


def per_seed(run) -> dict:
  """One run's numbers for the grid: accuracies, the last training fit, wall time."""
  best, last = accuracies(run)
  return {'best': best, 'last': last, 'wall_time_s': (run.summary or {}).get('wall_time_s'),
          **{key: series.last_eval(run, key) for key in catalogue.TRAIN_FIT_METRICS}}


def aggregate(runs: list) -> dict:
  """setting label -> method label -> aggregated numbers over seeds.

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
    best, last = zip(*[accuracies(r) for r in used])
    summ = [r.summary or {} for r in used]
    wall = [s.get('wall_time_s') for s in summ]
    out.setdefault(setting_label(setting), {})[method] = {
        'seeds': [r.seed for r in members],
        'unfinished_seeds': [r.seed for r in members if not r.finished],
        'aggregated_seeds': [r.seed for r in used],
        'all_unfinished': not any(r.finished for r in members),
        'best': list(best), 'last': list(last),
        'best_mean_std': mean_std(best), 'last_mean_std': mean_std(last),
        'per_seed': {r.seed: per_seed(r) for r in used},
        'step_time_s': mean([s.get('mean_step_time_s') for s in summ]),
        'median_step_s': mean([series.median_window_step(r) for r in used]),
        'wall_time_s': mean(wall),
        'wall_time_min': mean([w / 60 if w is not None else None for w in wall]),
        'clean_images': max(catalogue.clean_images(r.config) for r in used),
        'weight_clean': mean([s.get('mean_weight_clean') for s in summ]),
        'weight_noisy': mean([s.get('mean_weight_noisy') for s in summ]),
        # The host CPUs the runs record (provenance 'cpu'; older records have none).
        'machines': sorted({(s.get('provenance') or {}).get('cpu') for s in summ} - {None, ''}),
        **series.weight_shape(used),
    }
  return out


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
          f'{fmt_mean_std(a["last_mean_std"])} | {fmt(a["step_time_s"], ".3f")} | '
          f'{fmt(a["median_step_s"], ".3f")} | {fmt(a["wall_time_min"], ".1f")} | '
          f'{fmt(a["weight_clean"], ".2f")} / '
          f'{fmt(a["weight_noisy"], ".2f")} | {pct(a.get("zero_weight_fraction"))} | '
          f'{pct(a.get("effective_batch_fraction"))} |')
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
    names = series.estimators(k for k, v in qs.items()
                              if isinstance(v, dict) and 'cosine_mean' in v)
    exact_cv = (qs.get('exact') or {}).get('norm_cv')
    lines += [f'### {run.name} ({run_label(run)}, {qs.get("checks", "?")} checks)', '',
              '| estimator | layers used (mean) | cosine | per-example cosine | relative error '
              '| norm ratio | estimate norm CV | draw variance |',
              '|---|---|---|---|---|---|---|---|']
    for est in names:
      q = qs[est]
      lines.append(
          f'| {est} | {fmt(q.get("mean_layers"), ".1f")} | '
          f'{fmt_mean_std((q.get("cosine_mean"), q.get("cosine_std")), 3)} | '
          f'{fmt_mean_std((q.get("eps_cosine_mean"), q.get("eps_cosine_std")), 3)} | '
          f'{fmt_mean_std((q.get("rel_err_mean"), q.get("rel_err_std")), 3)} | '
          f'{fmt(q.get("norm_ratio_mean"), ".3f")} | {fmt(q.get("estimate_norm_cv"), ".3f")} '
          f'| {fmt(q.get("draw_variance"), ".3g")} |')
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
