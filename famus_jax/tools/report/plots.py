"""The report's figures (matplotlib, the `report` extra, imported at the first figure).

Each `plot_*` writes one figure into `out` (appending its path to `written`),
or records in `skipped` why no input has its data:

  accuracy_vs_time.png      test top-1 accuracy against training time, one
                            panel per setting, one line per run (FaMUS Fig. 1a).
  memorisation.png          per method, the share of the mislabelled training
                            examples predicted as their given (wrong) label,
                            against epoch: what re-weighting exists to keep low.
  weights_<setting>.png     per method, density histograms of the example
                            weights of clean vs mislabelled examples, early
                            and late in training (FaMUS Fig. 5).
  famus_sampled_layers.png  fraction of meta updates in which each layer
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
"""

import collections
import os
import textwrap

import numpy as np

from famus_jax.tools.report import series
from famus_jax.tools.report.labels import method_colours, method_sort_key, run_label
from famus_jax.tools.report.labels import setting_label, slug

DPI = 120
MAX_WIDTH_IN = 12.0
# Legend text at fontsize 'small' (DejaVu Sans): characters per inch, one line's height, the
# gap between entries, and the width of an entry's handle and padding.
LEGEND_CHARS_PER_IN = 14.0
LEGEND_LINE_IN = 0.14
LEGEND_ROW_GAP_IN = 0.06
LEGEND_HANDLE_IN = 0.55
ESTIMATOR_COLOURS = {'learned': 'tab:green', 'random': 'tab:purple', 'block': 'tab:brown',
                     'head': '#444444'}
CLEAN_COLOUR, NOISY_COLOUR = 'tab:blue', 'tab:red'
MISSING = ("famus_jax.tools.report: the figures need matplotlib, which is not installed: "
           "pip install 'famus_jax[report]'")


def matplotlib_modules() -> tuple:
  """(pyplot, lines, patches) on the file-only Agg backend; SystemExit naming the extra."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(MISSING) from e
  matplotlib.use('Agg')
  from matplotlib import lines, patches, pyplot  # pylint: disable=import-outside-toplevel
  return pyplot, lines, patches


def _settings(runs: list) -> list:
  return sorted({r.setting for r in runs})


def _save(fig, out: str, name: str, written: list, rect=None) -> str:
  """tight_layout (leaving `rect` free space for a figure legend), write at DPI, close."""
  fig.tight_layout(rect=rect)
  path = os.path.join(out, name)
  fig.savefig(path, dpi=DPI)
  matplotlib_modules()[0].close(fig)
  written.append(path)
  return path


def _legend_below(fig, handles: list, labels: list, ncol: int) -> tuple:
  """A figure legend under the panels; grows the figure by its height and returns the
  tight_layout rect that leaves it room.

  At most `ncol` columns, fewer where the figure's width does not hold them; a label longer
  than its column is wrapped.
  """
  width = fig.get_figwidth()
  longest = max((len(label) for label in labels), default=1)
  fits = int(width // (LEGEND_HANDLE_IN + longest / LEGEND_CHARS_PER_IN))
  ncol = max(1, min(ncol, len(labels), fits))
  chars = max(16, int((width / ncol - LEGEND_HANDLE_IN) * LEGEND_CHARS_PER_IN))
  wrapped = [textwrap.fill(label, chars) for label in labels]
  nrows = -(-len(wrapped) // ncol)  # matplotlib fills the columns first
  lines = sum(max(w.count('\n') + 1 for w in wrapped[r::nrows]) for r in range(nrows))
  height = 0.1 + LEGEND_LINE_IN * lines + LEGEND_ROW_GAP_IN * nrows
  fig.set_figheight(fig.get_figheight() + height)
  fig.legend(handles, wrapped, loc='lower center', ncol=ncol, fontsize='small', frameon=False)
  return (0, height / fig.get_figheight(), 1, 1)


def _skip(skipped: dict, name: str, why: str) -> None:
  print(f'{name}: skipped ({why})')
  skipped[name] = why


def _grid(n: int, max_cols: int = 3) -> tuple:
  cols = min(n, max_cols)
  return -(-n // cols), cols



def _curves(runs: list, curve_fn) -> list:
  """(run, x, y) for each run whose `curve_fn(run)` = (x, y) has points."""
  return [(run, x, y) for run, (x, y) in ((r, curve_fn(r)) for r in runs) if len(y)]


def _panels_per_setting(plt, runs: list) -> tuple:
  """(figure, [(axis, setting)]): one panel per setting of `runs`, the spare panels hidden."""
  settings = _settings(runs)
  rows, cols = _grid(len(settings))
  fig, axes = plt.subplots(rows, cols, figsize=(min(4.2 * cols, MAX_WIDTH_IN), 3.3 * rows + 0.6),
                           squeeze=False)
  for ax in list(axes.flat)[len(settings):]:
    ax.set_visible(False)
  for ax, setting in zip(axes.flat, settings):
    ax.set_title(textwrap.fill(setting_label(setting), 42), fontsize='medium')
    ax.grid(alpha=0.3)
  return fig, list(zip(axes.flat, settings))


def _method_legend(fig, mlines, colours: dict, runs: list, unfinished: bool = False) -> tuple:
  """A legend of the methods of `runs` under the panels (and the unfinished runs' dashes)."""
  methods = sorted({r.method for r in runs}, key=method_sort_key)
  handles = [mlines.Line2D([], [], color=colours[m], marker='o', markersize=3) for m in methods]
  if unfinished:
    handles.append(mlines.Line2D([], [], color='grey', linestyle='--'))
    methods = methods + ['unfinished run']
  return _legend_below(fig, handles, methods, ncol=min(len(methods), 6))


def plot_accuracy_vs_time(runs: list, colours: dict, out: str, written: list,
                          skipped: dict) -> None:
  """One panel per setting, one line per run coloured by method (FaMUS Fig. 1a)."""
  plt, mlines, _ = matplotlib_modules()
  name = 'accuracy_vs_time.png'
  curves = _curves(runs, series.eval_curve)
  if not curves:
    return _skip(skipped, name, 'no run has eval events with a training time')
  fig, panels = _panels_per_setting(plt, [c[0] for c in curves])
  for ax, setting in panels:
    for run, times, accs in curves:
      if run.setting == setting:
        ax.plot(times, accs, marker='o', markersize=3, color=colours[run.method],
                linestyle='-' if run.finished else '--', alpha=0.85)
    ax.set_xlabel('training time, compile included (s)')
    ax.set_ylabel('test top-1 accuracy (%)')
  rect = _method_legend(fig, mlines, colours, [c[0] for c in curves],
                        unfinished=not all(c[0].finished for c in curves))
  _save(fig, out, name, written, rect=rect)


def plot_memorisation(runs: list, colours: dict, out: str, written: list,
                      skipped: dict) -> None:
  """Memorised share of the mislabelled examples against epoch: one panel per setting.

  Per method the mean over its seeds (the band: their min to max) where the seeds were
  evaluated at the same epochs, else one thin line per run.
  """
  curves = _curves(runs, series.memorisation_curve)
  if not curves:
    return _skip(skipped, 'memorisation.png', 'no run has eval events with train_fit_noisy')
  groups = collections.defaultdict(dict)  # setting -> method -> [(epochs, share)]
  for run, epochs, share in curves:
    groups[run.setting].setdefault(run.method, []).append((epochs, share))
  plt, mlines, _ = matplotlib_modules()
  fig, panels = _panels_per_setting(plt, [c[0] for c in curves])
  for ax, setting in panels:
    for method in sorted(groups[setting], key=method_sort_key):
      members, colour = groups[setting][method], colours[method]
      if all(np.array_equal(m[0], members[0][0]) for m in members):
        shares = np.stack([m[1] for m in members])
        ax.plot(members[0][0], shares.mean(0), marker='o', markersize=3, color=colour)
        if len(members) > 1:
          ax.fill_between(members[0][0], shares.min(0), shares.max(0), color=colour, alpha=0.15)
      else:
        for epochs, share in members:
          ax.plot(epochs, share, color=colour, linewidth=1, alpha=0.7)
    ax.set_xlabel('epoch')
    ax.set_ylabel('mislabelled examples memorised (%)')
    ax.set_ylim(-2, 102)
  fig.suptitle(textwrap.fill('Memorised: mislabelled training examples predicted as their '
                             'given label (eval mode; mean over seeds, band: min-max)',
                             int(11 * fig.get_figwidth())), fontsize='medium')
  rect = _method_legend(fig, mlines, colours, [c[0] for c in curves])
  _save(fig, out, 'memorisation.png', written, rect=rect)


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
  plt = matplotlib_modules()[0]
  split = series.weight_split(runs)
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
        ax.set_title(textwrap.fill(f'{method}, {phase} (steps {steps[0]}-{steps[-1]})', 55),
                     fontsize='medium')
        ax.set_xlabel('example weight (batch mean = 1)')
        ax.set_ylabel('density')
    title = textwrap.fill(
        f'Example weights, {setting_label(setting)} (seeds pooled; bins shared per method, '
        f'weights beyond the last bin counted in it)', 100)
    fig.suptitle(title, fontsize='medium')
    top = 1 - (0.15 + 0.2 * (title.count('\n') + 1)) / fig.get_figheight()
    _save(fig, out, f'weights_{slug(setting_label(setting))}.png', written, rect=(0, 0, 1, top))
  return split


def plot_sampled_layers(runs: list, out: str, written: list, skipped: dict) -> dict:
  """Horizontal bars per layer, one bar per run; one panel per network (layer list)."""
  plt, _, patches = matplotlib_modules()
  name = 'famus_sampled_layers.png'
  found = {r.workdir: (r, series.sampled_layers(r)) for r in runs}
  found = {k: v for k, v in found.items() if v[1] is not None}
  if not found:
    _skip(skipped, name, 'no FaMUS run with famus_active_counts and a method event')
    return {}
  networks = collections.defaultdict(list)
  for run, s in found.values():
    networks[tuple(s['layers'])].append((run, s))
  n_layers = max(len(k) for k in networks)
  n_runs = max(len(v) for v in networks.values())
  fig, axes = plt.subplots(1, len(networks), squeeze=False, figsize=(
      min(5.5 * len(networks) + 1.0, MAX_WIDTH_IN),
      1.8 + 0.22 * n_layers * max(1.0, n_runs / 2)))
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
      labels.append(f'{run_label(run)} ({s["step"]} steps)')
      if always.any():
        ax.barh(offset[always], frac[always], height=height, color=colour, alpha=0.5,
                hatch='//', edgecolor='white')
    ax.set_yticks(y, [f'{n} (always on)' if n in members[0][1]['always_on'] else n
                      for n in layers], fontsize='small')
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel('fraction of meta updates active')
    ax.set_title('FaMUS: candidate layers in the meta gradient\n(network order, input side at '
                 'top)', fontsize='medium')
    ax.grid(axis='x', alpha=0.3)
  handles.append(patches.Patch(facecolor='lightgrey', hatch='//', edgecolor='white'))
  labels.append('always on (counted as 1)')
  _save(fig, out, name, written, rect=_legend_below(fig, handles, labels, ncol=1))
  return {r.name: dict(zip(s['layers'], s['fraction'])) for r, s in found.values()}


def plot_fsr_purity(runs: list, out: str, written: list, skipped: dict) -> None:
  """One line per FSR run; dashed: 1 - the run's realised noise rate (FSR Fig. 6)."""
  plt = matplotlib_modules()[0]
  name = 'fsr_purity.png'
  curves = _curves(runs, series.purity_curve)
  if not curves:
    return _skip(skipped, name, 'no run logs fsr_dict_purity')
  fig, ax = plt.subplots(figsize=(8.0, 3.8))
  palette = plt.get_cmap('tab10')
  for k, (run, epochs, purity) in enumerate(curves):
    colour = palette(k % 10)
    rate = run.realised_noise_rate
    noise = '' if rate is None else f', realised noise {100 * rate:.1f}%'
    ax.plot(epochs, purity, marker='o', markersize=3, color=colour,
            label=f'{run_label(run)}{noise}')
    if rate is not None:
      ax.axhline(100 * (1 - rate), color=colour, linestyle='--', linewidth=1, alpha=0.7)
  ax.set_xlabel('epoch')
  ax.set_ylabel('dictionary purity (% correct labels)')
  ax.set_title('FSR: purity of the clean dictionary\n(dashed: share of correct labels in the '
               'training set)', fontsize='medium')
  ax.grid(alpha=0.3)
  handles, labels = ax.get_legend_handles_labels()
  _save(fig, out, name, written, rect=_legend_below(fig, handles, labels, ncol=2))


def plot_pseudo_clean(runs: list, out: str, written: list, skipped: dict) -> None:
  """Precision and recall of each co-trained member's pseudo-clean set over epochs.

  Against the hidden clean flags (diagnostics only); one colour per run,
  member a solid, member b dashed; dotted: 1 - the realised noise rate (the
  precision of taking every example).
  """
  plt = matplotlib_modules()[0]
  name = 'pseudo_clean_division.png'
  curves = [(r, series.division_curves(r)) for r in runs]
  curves = [c for c in curves if c[1]]
  if not curves:
    return _skip(skipped, name, "no run logs 'division' events (co-trained pairs)")
  fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.8))
  palette = plt.get_cmap('tab10')
  for k, (run, members) in enumerate(curves):
    colour = palette(k % 10)
    for member, style in (('a', '-'), ('b', '--')):
      if member not in members:
        continue
      epochs, precision, recall = members[member]
      label = run_label(run) if member == 'a' else None
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


def plot_quality(runs: list, out: str, written: list, skipped: dict) -> None:
  """Per quality workdir: cosine and relative error of each estimator against step."""
  plt = matplotlib_modules()[0]
  name = 'meta_gradient_quality.png'
  found = [r for r in runs if r.quality]
  if not found:
    return _skip(skipped, name, 'no workdir has quality.jsonl')
  fig, axes = plt.subplots(len(found), 3, figsize=(12, 3.6 * len(found) + 0.4), squeeze=False)
  palette = plt.get_cmap('tab10')
  legend = {}
  for (ax_cos, ax_eps, ax_err), run in zip(axes, found):
    names = series.estimators(r['estimator'] for r in run.quality)
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
    where = textwrap.fill(f'{run.name} ({run_label(run)})', 45)
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
  names = series.estimators(legend)
  rect = _legend_below(fig, [legend[n] for n in names], [f'estimator: {n}' for n in names],
                       ncol=len(names))
  _save(fig, out, name, written, rect=rect)


def benchmark_label(result: dict) -> str:
  return f'{result.get("model", "?")}, batch {result.get("batch_size", "?")}'


def plot_benchmarks(benchmarks: list, out: str, written: list, skipped: dict) -> None:
  """Grouped bars of step time / ERM's, one group per benchmark file."""
  plt = matplotlib_modules()[0]
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
