"""The memorisation grid's table: seeds, paired differences, memorisation, cost, per setting.

For each method label of a setting: best and last top-1 (mean ± sample std,
ddof=1, and per seed), the paired difference of the last top-1 to ERM and to
exact MW-Net ('mwnet': recompute, clean meta set) over the seeds both have,
the training fit at the last evaluation (against the given labels on all /
correctly / wrongly labelled examples: on the wrongly labelled ones it is the
memorised share; and the share of the wrongly labelled ones predicted as their
true class), the clean-labelled images the method reads, the mean weights of
clean and mislabelled examples, the median step and the whole-run wall time as
ratios to ERM's (marked where the row's and ERM's runs record different host
CPUs). A short table of the columns a results page quotes (`summary_table`)
comes before the full one (`grid_table`), and the one-backward actual step
against the papers' (`actual_step_table`: each row with `reuse` paired with the
same row without it) after it. Then the regime's criteria: ERM memorises (its
final fit to the given labels >= 0.8) and its last epoch falls >= 10 points
below its best.
"""

from typing import Optional

from famus_jax import catalogue
from famus_jax.tools.report.labels import without_tag
from famus_jax.tools.report.tables import fmt, fmt_mean_std, mean, mean_std, pct

ERM = 'erm'
EXACT_MWNET = 'mwnet'
MEMORISED_FIT = 0.8      # ERM's final fit to the given labels at least this
COLLAPSE_POINTS = 10.0   # ERM's last top-1 at least this far below its best
MIXED_MARK = '†'         # after a step / wall ratio whose runs ran on different machines


def seed_differences(a: dict, reference: dict, key='last') -> dict:
  """seed -> a[seed][key] - reference[seed][key], over the seeds both have a value for."""
  return {s: a[s][key] - reference[s][key] for s in a
          if s in reference and a[s][key] is not None and reference[s][key] is not None}


def paired_difference(a: dict, reference: Optional[dict], key='last') -> tuple:
  """(mean, sample std, pairs) of `seed_differences`."""
  if reference is None:
    return None, None, 0
  diffs = seed_differences(a, reference, key)
  return (*mean_std(list(diffs.values())), len(diffs))


def _ratio(value, reference) -> Optional[float]:
  return None if value is None or not reference else value / reference


def grid_rows(methods: dict) -> dict:
  """method label -> the grid's numbers, from one setting of `tables.aggregate`."""
  erm, mwnet = methods.get(ERM), methods.get(EXACT_MWNET)
  out = {}
  for label, a in methods.items():
    seeds = a['per_seed']
    row = {'seeds': sorted(seeds, key=str), 'best_mean_std': a['best_mean_std'],
           'last_mean_std': a['last_mean_std'],
           'per_seed': {s: (v['best'], v['last']) for s, v in seeds.items()},
           'minus_erm': (None, None, 0) if label == ERM else paired_difference(
               seeds, erm and erm['per_seed']),
           'minus_mwnet': (None, None, 0) if label == EXACT_MWNET else paired_difference(
               seeds, mwnet and mwnet['per_seed']),
           'clean_images': a['clean_images'], 'weight_clean': a['weight_clean'],
           'weight_noisy': a['weight_noisy'],
           'median_step_s': a['median_step_s'],
           'all_unfinished': a['all_unfinished'],
           'running': [] if a['all_unfinished'] else a['unfinished_seeds'],
           'step_ratio': _ratio(a['median_step_s'], erm and erm['median_step_s']),
           'wall_ratio': _ratio(a['wall_time_s'], erm and erm['wall_time_s']),
           'mixed_machines': len(set(a['machines']) | set(erm['machines'] if erm else [])) > 1}
    for key in catalogue.TRAIN_FIT_METRICS:
      row[key] = mean_std([v[key] for v in seeds.values()])
    out[label] = row
  return out


def _paired(cell: tuple, seeds: int) -> str:
  text = fmt_mean_std(cell, sign='+')
  if cell[2] in (0, seeds):
    return text
  return f'{text} ({cell[2]} pair{"s" if cell[2] > 1 else ""})'


def _fit(pair: tuple) -> str:
  m, s = pair
  return '-' if m is None else pct(m, 1) + ('' if s is None else f' ± {100 * s:.1f}')


def _each_seed(values: dict, cell) -> str:
  """'s0 X, s1 Y, ...': cell(value) of each seed, seeds in order of their names."""
  return ', '.join(f's{s} {cell(v)}' for s, v in sorted(values.items(), key=lambda kv: str(kv[0])))


def summary_table(setting: str, rows: dict) -> list:
  """Markdown lines: the grid's short table of one setting (the columns a results page shows):
  the clean images a row's method reads, its seeds with their last top-1, the mean last top-1,
  paired differences to ERM and exact MW-Net, the memorised share of the mislabelled examples
  and the step over ERM's."""
  lines = [f'### {setting}: summary', '',
           '| method | clean images | last top-1 % per seed | last top-1 % | last - ERM (paired) | '
           'last - exact MW-Net (paired) | memorised, mislabelled % | step x ERM |',
           '|---' * 8 + '|']
  for label, r in rows.items():
    mark = MIXED_MARK if r['mixed_machines'] else ''
    name = f'{label} (unfinished)' if r['all_unfinished'] else label
    memorised = r[catalogue.TRAIN_FIT_NOISY][0]
    per_seed = _each_seed(r['per_seed'], lambda v: fmt(v[1], '.2f'))
    lines.append(
        f'| {name} | {r["clean_images"] or "none"} | {per_seed} | '
        f'{fmt_mean_std(r["last_mean_std"])} | {_paired(r["minus_erm"], len(r["seeds"]))} | '
        f'{_paired(r["minus_mwnet"], len(r["seeds"]))} | '
        f'{"-" if memorised is None else pct(memorised, 1)} | '
        f'{fmt(r["step_ratio"], ".2f")}{mark} |')
  return lines + ['']


def grid_table(setting: str, rows: dict) -> list:
  """Markdown lines: the grid's table of one setting."""
  lines = [f'### {setting}', '',
           '| method | seeds | best top-1 % | last top-1 % | best / last per seed | '
           'last - ERM (paired) | last - MW-Net (paired) | fit to given labels % | '
           'fit, clean % | memorised, mislabelled % | mislabelled predicted true % | '
           'mean weight clean / mislabelled | median step (s) | step x ERM | wall x ERM |',
           '|---' * 15 + '|']
  for label, r in rows.items():
    mark = MIXED_MARK if r['mixed_machines'] else ''
    per_seed = _each_seed(r['per_seed'], lambda v: f'{fmt(v[0], ".2f")} / {fmt(v[1], ".2f")}')
    per_seed += ''.join(f', s{s} running' for s in sorted(r['running'], key=str))
    name = f'{label} (unfinished)' if r['all_unfinished'] else label
    lines.append(
        f'| {name} | {len(r["seeds"])} | {fmt_mean_std(r["best_mean_std"])} | '
        f'{fmt_mean_std(r["last_mean_std"])} | {per_seed} | '
        f'{_paired(r["minus_erm"], len(r["seeds"]))} | '
        f'{_paired(r["minus_mwnet"], len(r["seeds"]))} | '
        + ' | '.join(_fit(r[key]) for key in catalogue.TRAIN_FIT_METRICS) + ' | '
        f'{fmt(r["weight_clean"], ".2f")} / {fmt(r["weight_noisy"], ".2f")} | '
        f'{fmt(r["median_step_s"], ".3f")} | {fmt(r["step_ratio"], ".2f")}{mark} | '
        f'{fmt(r["wall_ratio"], ".2f")}{mark} |')
  if any(r['mixed_machines'] for r in rows.values()):
    lines += ['', f'{MIXED_MARK} The runs of this row and ERM\'s ran on more than one machine '
              "(summary.json's provenance cpu): the ratio mixes machines."]
  return lines + ['']


REUSE_TAG = catalogue.REUSE.names['reuse']


def actual_step_pairs(rows: dict) -> dict:
  """label with `reuse` -> (label without it, paired difference of the last top-1).

  Rows of `grid_rows`; a `reuse` row whose partner (the same label, `recompute`) is not in
  the setting is left out. 'difference': (mean, sample std, pairs) of reuse minus recompute
  over the seeds both have, each seed's in 'per_seed'.
  """
  pairs = {}
  for label, r in rows.items():
    partner = without_tag(label, REUSE_TAG)
    if partner is None or partner not in rows:
      continue
    mine, theirs = r['per_seed'], rows[partner]['per_seed']  # seed -> (best, last)
    pairs[label] = {'partner': partner, 'per_seed': seed_differences(mine, theirs, 1),
                    'difference': paired_difference(mine, theirs, 1)}
  return pairs


def actual_step_table(setting: str, rows: dict) -> list:
  """Markdown lines: each `reuse` row against its `recompute` partner (none: no lines)."""
  pairs = actual_step_pairs(rows)
  if not pairs:
    return []
  lines = [f'### {setting}: actual step, reuse against recompute', '',
           '| reuse row | recompute row | reuse, last top-1 % | recompute, last top-1 % | '
           'reuse - recompute (paired) | per seed | against one recompute sd | '
           'step, reuse / recompute |', '|---' * 8 + '|']
  for label, p in pairs.items():
    mine, theirs = rows[label], rows[p['partner']]
    diff, sd = p['difference'][0], theirs['last_mean_std'][1]
    within = ('-' if diff is None or sd is None else 'within' if abs(diff) <= sd
              else 'above' if diff > 0 else 'below')
    lines.append(
        f'| {label} | {p["partner"]} | {fmt_mean_std(mine["last_mean_std"])} | '
        f'{fmt_mean_std(theirs["last_mean_std"])} | '
        f'{_paired(p["difference"], len(mine["seeds"]))} | '
        f'{_each_seed(p["per_seed"], lambda v: fmt(v, "+.2f"))} | {within} | '
        f'{fmt(_ratio(mine["median_step_s"], theirs["median_step_s"]), ".2f")} |')
  return lines + ['']


def regime_criteria(methods: dict) -> list:
  """PASS / FAIL lines of the memorisation regime's two criteria, from ERM's runs."""
  erm = methods.get(ERM)
  if erm is None:
    return ['- regime criteria: no ERM run in this setting']
  seeds = sorted(erm['per_seed'], key=str)
  fits = [erm['per_seed'][s][catalogue.TRAIN_FIT] for s in seeds]
  drops = [None if v['best'] is None or v['last'] is None else v['best'] - v['last']
           for v in (erm['per_seed'][s] for s in seeds)]
  each = lambda values, spec: _each_seed(dict(zip(seeds, values)), lambda v: fmt(v, spec))
  lines = []
  if any(f is None for f in fits):
    lines.append(f'- n/a: ERM\'s final fit to the given (noisy) labels >= {MEMORISED_FIT}: '
                 'some of its runs log no train_fit')
  else:
    fit = mean(fits)
    ok = fit >= MEMORISED_FIT
    lines.append(f'- {"PASS" if ok else "FAIL"}: ERM\'s final fit to the given (noisy) labels '
                 f'{fit:.3f} (mean; {each(fits, ".3f")}) {">=" if ok else "<"} {MEMORISED_FIT}')
  drop = mean(drops)
  if drop is None:
    return lines + [f'- n/a: ERM\'s best minus last top-1 >= {COLLAPSE_POINTS:g} points: no '
                    'evaluation']
  ok = drop >= COLLAPSE_POINTS
  lines.append(f'- {"PASS" if ok else "FAIL"}: ERM\'s best minus last top-1 {drop:.2f} points '
               f'(mean; {each(drops, ".2f")}) {">=" if ok else "<"} {COLLAPSE_POINTS:g}')
  return lines


def grid_section(acc: dict) -> tuple:
  """(Markdown lines, {setting: rows}) of every setting of `tables.aggregate`'s result."""
  lines = ['## Seeds, paired differences and memorisation', '',
           'Mean ± sample standard deviation over seeds (numpy std with ddof=1; left out for '
           'one value). Paired: the last top-1 of a method minus that of ERM / exact MW-Net '
           "(mwnet, recompute, clean meta set) on the same seed, mean ± std over the seeds "
           'both have ("(n pairs)" when fewer than the seeds). Fit columns: eval-mode '
           'accuracy on the training set at the last evaluation against the given labels, on '
           'all / correctly / wrongly labelled examples (the last: the memorised share), and '
           'the share of wrongly labelled examples predicted as their true class; "-" for '
           'runs that do not log them. Step x ERM: median step over ERM\'s; wall x ERM: '
           "mean whole-run wall time (summary.json) over ERM's. Only finished runs count; a "
           'method with none shows its running ones so far, marked "(unfinished)" (their '
           '"last" is the latest evaluation), and "running" names seeds still training.', '']
  grids = {}
  for setting, methods in acc.items():
    grids[setting] = grid_rows(methods)
    lines += summary_table(setting, grids[setting])
    lines += grid_table(setting, grids[setting])
    lines += actual_step_table(setting, grids[setting])
    lines += ['Regime criteria:', '', *regime_criteria(methods), '']
  return lines, grids
