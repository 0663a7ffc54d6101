"""Plots and a Markdown report from finished runs and step-time benchmarks.

  python -m famus_jax.tools.report runs/grid bench_resnet32.json --out=results/

The command's flags are absl's (`__main__.py`; the PATHs and --out in any
order); from Python, `make_report(paths, out)`. Each PATH is a run workdir
(config.json + metrics.jsonl, usually summary.json; what
`famus_jax.train.trainer` writes), a directory whose immediate subdirectories
are run workdirs, a FaMUS estimator-quality workdir (config.json +
quality.jsonl, from `python -m famus_jax.tools.quality`), or a benchmark JSON
file (`python -m famus_jax.tools.benchmark --out=F.json`).

Writes in --out the figures of `plots` (a figure is skipped, with one printed
line why, when no input has its data) and report.md: accuracy tables per
setting and a pivot over settings, the grid's table per setting (seeds,
paired differences to ERM and exact MW-Net, memorisation, cost, `reuse` rows
against `recompute`; `grid`) with
the memorisation regime's PASS / FAIL criteria (also printed), how fast the
weights learned (weight AUROC and meta-gradient norm per band of the run; `signal`),
estimator-quality and benchmark tables, and links to the figures.

Modules: `loading` (inputs), `labels` (method and setting labels, from
`famus_jax.catalogue`), `series` (numbers out of one run's events), `tables`
(aggregation over seeds, Markdown tables), `grid` (the memorisation grid's
table), `signal` (weight AUROC and meta-gradient norm per band), `plots`
(matplotlib, the `report` extra). Runs without summary.json are unfinished:
plotted, and flagged in the tables.
"""

import os

from famus_jax.provenance import provenance
from famus_jax.tools.report import grid, plots, signal, tables
from famus_jax.tools.report.labels import method_colours, method_label, setting_label, slug
from famus_jax.tools.report.labels import tag_variants
from famus_jax.tools.report.loading import RunDir, load_inputs, load_run, with_schema_defaults
from famus_jax.tools.report.series import ESTIMATOR_ORDER, division_curves, median_window_step
from famus_jax.tools.report.series import weight_shape

__all__ = ['ESTIMATOR_ORDER', 'RunDir', 'build_report', 'division_curves', 'load_inputs',
           'load_run', 'make_report', 'median_window_step', 'method_label', 'tag_variants',
           'weight_shape', 'with_schema_defaults']

FIGURE_TITLES = (
    ('accuracy_vs_time.png', 'Test accuracy against training time (FaMUS Fig. 1a)'),
    ('memorisation.png', 'Memorised share of the mislabelled training examples'),
    ('famus_sampled_layers.png', 'FaMUS: fraction of steps each layer was sampled '
     '(FaMUS supplement Fig. 2)'),
    ('fsr_purity.png', 'FSR dictionary purity (FSR Fig. 6)'),
    ('pseudo_clean_division.png', 'Co-trained pairs: precision and recall of the pseudo-clean '
     'sets (FaMUS supplement Alg. 2)'),
    ('meta_gradient_quality.png', 'Meta-gradient estimator quality'))


def _image(path: str, alt: str) -> list:
  return [f'![{alt}]({os.path.basename(path)})', '']


def write_markdown(out: str, runs: list, benchmarks: list, acc: dict, grid_lines: list,
                   written: list, skipped: dict) -> str:
  """report.md: tables, then each figure under a heading."""
  images = {os.path.basename(p): p for p in written}
  settings = {f'weights_{slug(setting_label(s))}.png': setting_label(s)
              for s in {r.setting for r in runs}}
  made = provenance()
  lines = ['# Report', '',
           f'Inputs: {len(runs)} workdir(s), {len(benchmarks)} benchmark file(s). Made on '
           f'{made["date"]} by `{made["command"]}` at commit {made["git_commit"]}'
           f'{" (with uncommitted changes)" if made["git_dirty"] else ""}, famus_jax '
           f'{made["package_version"]}, JAX {made["jax"]}; each run\'s own provenance is in its '
           'summary.json.', '']
  if acc:
    lines += tables.accuracy_tables(acc) + grid_lines + signal.signal_section(runs)
  titles = list(FIGURE_TITLES[:2])
  titles += [(n, f'Example weights, {settings.get(n, n[len("weights_"):-4])} (FaMUS Fig. 5)')
             for n in sorted(images) if n.startswith('weights_')]
  titles += list(FIGURE_TITLES[2:])
  lines += ['## Figures', '']
  for name, title in titles:
    if name in images:
      lines += [f'### {title}', '', *_image(images[name], title)]
  lines += tables.quality_tables(runs)
  lines += tables.benchmark_tables(benchmarks)
  if 'benchmark_ratios.png' in images:
    lines += _image(images['benchmark_ratios.png'], 'step time relative to ERM')
  if skipped:
    lines += ['## Skipped figures', ''] + [f'- {k}: {v}' for k, v in skipped.items()] + ['']
  path = os.path.join(out, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines))
  return path


def build_report(runs: list, benchmarks: list, out: str) -> dict:
  """All figures and report.md in `out`; returns the paths and the numbers."""
  plots.matplotlib_modules()  # the one-line error before any work when it is missing
  os.makedirs(out, exist_ok=True)
  written, skipped = [], {}
  with_metrics = [r for r in runs if r.has_metrics]
  colours = method_colours(r.method for r in with_metrics)
  plots.plot_accuracy_vs_time(with_metrics, colours, out, written, skipped)
  plots.plot_memorisation(with_metrics, colours, out, written, skipped)
  split = plots.plot_weights(with_metrics, out, written, skipped)
  layers = plots.plot_sampled_layers(with_metrics, out, written, skipped)
  plots.plot_fsr_purity(with_metrics, out, written, skipped)
  plots.plot_pseudo_clean(with_metrics, out, written, skipped)
  plots.plot_quality(runs, out, written, skipped)
  plots.plot_benchmarks(benchmarks, out, written, skipped)
  acc = tables.aggregate(runs)
  grid_lines, grids = grid.grid_section(acc)
  for setting, methods in acc.items():
    print(f'regime criteria, {setting}:')
    print('\n'.join(grid.regime_criteria(methods)))
  report = write_markdown(out, runs, benchmarks, acc, grid_lines, written, skipped)
  return {'report': report, 'figures': written, 'skipped': skipped, 'accuracy': acc,
          'grid': grids, 'signal': signal.signal_rows(runs), 'sampled_layers': layers,
          'weight_steps': {setting_label(s): {m: {'early': e['early_steps'],
                                                  'late': e['late_steps']}
                                              for m, e in methods.items()}
                           for s, methods in split.items()}}


def make_report(paths: list, out: str) -> dict:
  """The report of `paths` (workdirs, directories of workdirs, benchmark files) in `out`.

  A path that is none of them ends the program with one line naming it; returns
  `build_report`'s paths and numbers.
  """
  try:
    runs, benchmarks = load_inputs(paths)
  except ValueError as e:
    raise SystemExit(f'famus_jax.tools.report: {e}') from e
  result = build_report(runs, benchmarks, out)
  print(f'wrote {result["report"]} and {len(result["figures"])} figures')
  return result

