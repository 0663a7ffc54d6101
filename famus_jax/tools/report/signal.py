"""How fast and how well each method's weights learned to tell the mislabelled examples apart.

Per method label of a setting, averaged over its finished seeds, in five bands of the run
(`BANDS`, fractions of its steps: epochs 0-5, 5-10, 10-20, 20-30 and 30-40 of a 40-epoch run):

- weight AUROC: the probability that a mislabelled example of a logged batch gets a lower
  weight than a correctly labelled one (ties count half), pooled over the batches the band's
  'weights' events logged (one batch's example weights and hidden noise flags every
  `weights_log_every` steps); 0.5 is chance, below 0.5 the weights favour the wrong labels;
- meta-gradient norm: the mean of the band's 'train' events' `meta_grad_norm` (the norm of the
  meta model's gradient before its optimiser), and its ratio to exact MW-Net's in the same band
  and setting: how fast the meta model is taught, whatever estimates its gradient.

Methods whose runs log neither are left out (ERM logs its uniform weights: AUROC 0.5).
"""

import collections
from typing import Optional

import numpy as np

from famus_jax import catalogue
from famus_jax.tools.report.grid import EXACT_MWNET
from famus_jax.tools.report.labels import method_sort_key, setting_label
from famus_jax.tools.report.tables import fmt, mean

BANDS = ((0.0, 0.125), (0.125, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
META_GRAD_NORM = 'meta_grad_norm'


def auroc_low_weight(weights: np.ndarray, noisy: np.ndarray) -> Optional[float]:
  """P(weight of a mislabelled example < weight of a clean one), ties half; None without both.

  weights: (n,) float; noisy: (n,) bool. The Mann-Whitney U statistic of the negated weights
  over the n_noisy * n_clean pairs, from average ranks.
  """
  noisy = np.asarray(noisy, bool)
  n_noisy, n_clean = int(noisy.sum()), int((~noisy).sum())
  if n_noisy == 0 or n_clean == 0:
    return None
  values = -np.asarray(weights, np.float64)
  order = np.argsort(values, kind='mergesort')
  ranks = np.empty(len(values))
  sorted_values = values[order]
  start = 0
  while start < len(values):  # average ranks over ties
    stop = start
    while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
      stop += 1
    ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
    start = stop + 1
  u = ranks[noisy].sum() - n_noisy * (n_noisy + 1) / 2
  return float(u / (n_noisy * n_clean))


def _band(step: int, total: int) -> Optional[int]:
  for i, (lo, hi) in enumerate(BANDS):
    last = i == len(BANDS) - 1
    if lo * total <= step < hi * total or (last and step == total):
      return i
  return None


def run_signal(run) -> dict:
  """{'auroc': [per band or None], 'meta_grad_norm': [per band or None]} of one run."""
  total = int((run.summary or {}).get('steps') or max((e.get('step', 0) for e in run.events),
                                                       default=0))
  pooled = collections.defaultdict(lambda: ([], []))
  norms = collections.defaultdict(list)
  for e in run.of(catalogue.WEIGHTS):
    band = _band(e['step'], total)
    if band is not None and 'noisy' in e:
      pooled[band][0].extend(e['weights'])
      pooled[band][1].extend(e['noisy'])
  for e in run.of(catalogue.TRAIN):
    band = _band(e['step'], total)
    if band is not None and META_GRAD_NORM in e:
      norms[band].append(e[META_GRAD_NORM])
  return {'auroc': [auroc_low_weight(*pooled[b]) if b in pooled else None
                    for b in range(len(BANDS))],
          'meta_grad_norm': [mean(norms[b]) if norms.get(b) else None
                             for b in range(len(BANDS))]}


def signal_rows(runs: list) -> dict:
  """setting label -> method label -> {'seeds', 'auroc', 'meta_grad_norm', 'norm_ratio'}."""
  groups = collections.defaultdict(list)
  for run in runs:
    if run.finished and run.has_metrics:
      groups[(setting_label(run.setting), run.method)].append(run_signal(run))
  out = {}
  for (setting, method), signals in groups.items():
    row = {'seeds': len(signals)}
    for key in ('auroc', 'meta_grad_norm'):
      row[key] = [mean([s[key][b] for s in signals]) for b in range(len(BANDS))]
    if all(v is None for v in row['auroc'] + row['meta_grad_norm']):
      continue
    out.setdefault(setting, {})[method] = row
  for methods in out.values():
    reference = methods.get(EXACT_MWNET, {}).get('meta_grad_norm', [None] * len(BANDS))
    for row in methods.values():
      row['norm_ratio'] = [None if v is None or not r else v / r
                           for v, r in zip(row['meta_grad_norm'], reference)]
  return {s: dict(sorted(m.items(), key=lambda kv: method_sort_key(kv[0])))
          for s, m in out.items()}


def signal_section(runs: list) -> list:
  """Markdown lines: the weight AUROC and meta-gradient tables of every setting."""
  rows = signal_rows(runs)
  if not rows:
    return []
  bands = ' | '.join(f'{100 * lo:g}-{100 * hi:g}%' for lo, hi in BANDS)
  lines = ['## How fast the weights learned', '',
           'Per band of the run (share of its steps; for 40 epochs: epochs 0-5, 5-10, 10-20, '
           '20-30, 30-40), mean over finished seeds. Weight AUROC: the probability that a '
           'mislabelled example of a logged batch gets a lower weight than a correctly '
           'labelled one (0.5 chance, below 0.5 inverted). Meta-gradient norm: the mean '
           '`meta_grad_norm` of the band, and as a ratio to exact MW-Net\'s in the same band.',
           '']
  for setting, methods in rows.items():
    lines += [f'### {setting}', '', f'| method | seeds | weight AUROC: {bands} | '
              f'meta-gradient norm: {bands} | norm x MW-Net: {bands} |',
              '|---|---|' + '---|' * (3 * len(BANDS))]
    for method, r in methods.items():
      cells = ([fmt(v, '.3f') for v in r['auroc']] + [fmt(v, '.4f') for v in r['meta_grad_norm']]
               + [fmt(v, '.2f') for v in r['norm_ratio']])
      lines.append(f'| {method} | {r["seeds"]} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  return lines
