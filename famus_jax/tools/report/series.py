"""Numbers read out of one run's events: curves over training and per-run summaries.

No plotting here: `plots` draws these, `tables` and `grid` aggregate them.
"""

from typing import Optional

import numpy as np

from famus_jax import catalogue

EARLY_LATE_FRACTION = 0.2
ESTIMATOR_ORDER = ('learned', 'random', 'block', 'head')


def eval_curve(run) -> tuple:
  """(training seconds, test accuracy %) at each eval; time from train_time_s, else
  step * summary.mean_step_time_s (older runs); empty when neither is known."""
  step_time = (run.summary or {}).get('mean_step_time_s')
  times, accs = [], []
  for e in run.of(catalogue.EVAL):
    if catalogue.TRAIN_TIME_S in e:
      times.append(float(e[catalogue.TRAIN_TIME_S]))
    elif step_time is not None:
      times.append(e['step'] * float(step_time))
    else:
      continue
    accs.append(100.0 * e[catalogue.TEST_ACCURACY])
  return np.asarray(times), np.asarray(accs)


def median_window_step(run) -> Optional[float]:
  """Median seconds per step over the windows between consecutive evals (None if < 2 evals).

  Window k: (train_time_s[k+1] - train_time_s[k]) / (step[k+1] - step[k]). The first eval
  (which holds the compile) starts no window, and a window that holds a pause of the process
  (SIGSTOP, a suspended laptop) or a resume's recompile is one outlier the median ignores,
  unlike summary.json's mean_step_time_s.
  """
  evals = [e for e in run.of(catalogue.EVAL) if catalogue.TRAIN_TIME_S in e]
  steps = np.asarray([e['step'] for e in evals], np.float64)
  times = np.asarray([e[catalogue.TRAIN_TIME_S] for e in evals], np.float64)
  keep = np.diff(steps) > 0
  if not keep.any():
    return None
  return float(np.median(np.diff(times)[keep] / np.diff(steps)[keep]))


def steps_per_epoch(run) -> Optional[float]:
  """Steps per epoch from the train events' epoch field (else summary.json), None if unknown."""
  for e in run.of(catalogue.TRAIN):
    if e.get('epoch'):
      return e['step'] / e['epoch']
  summary = run.summary or {}
  if summary.get('epochs') and summary.get('steps'):
    return summary['steps'] / summary['epochs']
  return None


def last_eval(run, key: str) -> Optional[float]:
  """`key` of the run's last eval event that has it (None: no eval event has it)."""
  values = [e[key] for e in run.of(catalogue.EVAL) if e.get(key) is not None]
  return float(values[-1]) if values else None


def memorisation_curve(run) -> tuple:
  """(epochs, memorised % of the mislabelled examples) at each eval with train_fit_noisy."""
  per_epoch = steps_per_epoch(run)
  pts = [(e['step'] / per_epoch if per_epoch else e['step'],
          100.0 * e[catalogue.TRAIN_FIT_NOISY])
         for e in run.of(catalogue.EVAL) if e.get(catalogue.TRAIN_FIT_NOISY) is not None]
  return tuple(np.asarray(col) for col in zip(*pts)) if pts else ((), ())


def _reweighted(event: dict) -> bool:
  """Whether this batch's weights are not all exactly 1 (ERM, FSR's warm-up: all 1)."""
  return not np.all(np.asarray(event['weights'], np.float64) == 1.0)


def split_weight_events(run) -> tuple:
  """(early, late) weights events of a run in which the weights are not all 1.

  early: from the first such event on, the first 20% of the remaining steps;
  late: the last 20% of the run's steps. Each holds at least one event when the
  run has any (the first / last re-weighted one).
  """
  events = [e for e in run.of(catalogue.WEIGHTS) if _reweighted(e)]
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


def weight_shape(runs: list) -> dict:
  """Zero-weight fraction and effective batch size of the logged batches, last half of training.

  Per logged batch with weights w (n,): zero fraction mean(w == 0) (weights are logged to 4
  decimals) and effective batch (sum w)^2 / (n sum w^2) (1 for uniform weights, s/n when s
  weights are equal and the rest 0). Means over the batches logged in the second half of each
  run, then over runs; None without weights events.
  """
  zeros, ess = [], []
  for run in runs:
    events = run.of(catalogue.WEIGHTS)
    if not events:
      continue
    half = max(e['step'] for e in events) / 2
    for e in events:
      w = np.asarray(e['weights'], np.float64)
      if e['step'] < half or not w.size or not np.any(w):
        continue
      zeros.append(float(np.mean(w == 0)))
      ess.append(float(np.sum(w) ** 2 / (w.size * np.sum(w ** 2))))
  return {'zero_weight_fraction': float(np.mean(zeros)) if zeros else None,
          'effective_batch_fraction': float(np.mean(ess)) if ess else None}


def sampled_layers(run) -> Optional[dict]:
  """{'layers': [...], 'fraction': [...], 'always_on': [...], 'step': S} or None.

  fraction = the last cumulative active count of each candidate layer / the number of
  meta updates up to that event's step (every step, or steps 0, k, 2k, ... under a
  meta-update period k: `catalogue.update_every`); always-on layers count as 1; layers in
  network order. 'step': the event's step.
  """
  method = run.of(catalogue.METHOD)
  trains = [e for e in run.of(catalogue.TRAIN) if catalogue.FAMUS_ACTIVE_COUNTS in e]
  if not method or not trains or 'famus_candidates' not in method[0]:
    return None
  info, last = method[0], trains[-1]
  counts = dict(zip(info['famus_candidates'], last[catalogue.FAMUS_ACTIVE_COUNTS]))
  always = list(info.get('famus_always_on', []))
  layers = [n for n in info.get('famus_layers', info['famus_candidates'])
            if n in counts or n in always]
  updates = -(-last['step'] // catalogue.update_every(run.config))
  fraction = [1.0 if n in always else counts[n] / max(updates, 1) for n in layers]
  return {'layers': layers, 'fraction': fraction, 'always_on': always, 'step': last['step']}


def purity_curve(run) -> tuple:
  """(epoch, purity %) from the train events with fsr_dict_purity (NaN ones dropped)."""
  key = catalogue.FSR_DICT_PURITY
  pts = [(e.get('epoch', np.nan), 100.0 * e[key]) for e in run.of(catalogue.TRAIN)
         if e.get(key) is not None and np.isfinite(e[key])]
  return (np.asarray([p[0] for p in pts]), np.asarray([p[1] for p in pts])) if pts else ((), ())


def division_curves(run) -> dict:
  """{member: (epochs, precision %, recall %)} from the run's 'division' events (a and b)."""
  events = run.of(catalogue.DIVISION)
  out = {}
  for member in ('a', 'b'):
    pts = [(e['epoch'], 100.0 * e[f'{member}_precision'], 100.0 * e[f'{member}_recall'])
           for e in events if e.get(f'{member}_precision') is not None]
    if pts:
      out[member] = tuple(np.asarray(col) for col in zip(*pts))
  return out


def estimators(names) -> list:
  """Estimator names in ESTIMATOR_ORDER, others after it sorted."""
  names = set(names)
  return [e for e in ESTIMATOR_ORDER if e in names] + sorted(names - set(ESTIMATOR_ORDER))
