"""Label-error detection of re-weighted runs against confident learning (cleanlab), side by side.

  python -m venv cl && cl/bin/pip install -e . cleanlab    # its own environment (see below)
  cl/bin/python scripts/confident_learning.py --workdirs=runs/fm40_mwnet,runs/fm40_fsr \\
      --folds=5 --out=runs/fm40_cl

cleanlab is AGPL-licensed: it is not a dependency of famus_jax (no extra names it); install it
in the environment that runs this script only. The script stops with one line saying so when
it is missing.

What it does, for the runs in --workdirs (finished famus_jax runs on the same data and noise:
the first one's config sets the data, the network and the schedule):

1. Folds: the training set, split into K parts (`--folds`, default 5) stratified by the given
   (noisy) label, from `--seed` (`stratified_folds`).
2. K trainings: for each fold k, ERM with the project's own trainer through its public entry
   `famus_jax.train.trainer.train_and_evaluate(config, workdir, data=...)` (in OUT/fold_k:
   checkpoints, resume, summary.json) on the run's training set without fold k: the same
   images with the same noisy labels, the same network, schedule, augmentation and seed. The
   fold's training set is in-memory arrays, the run's restricted to the fold's indices
   (`restricted_data`), handed to the trainer as its data. A config's `train_subset` cannot
   do this: it draws a class-balanced subset of its own, and the label noise is drawn after
   subsetting, so the labels would not be the run's.
3. Out-of-fold probabilities: each fold's final network (eval mode) predicts softmax
   probabilities for the examples it did not train on (`out_of_fold_probabilities`); each
   training example gets exactly one row, from the one fold that held it out.
4. Confident learning: `cleanlab.filter.find_label_issues(labels, pred_probs)` gives its
   flagged set; `cleanlab.rank.get_label_quality_scores` its ranking (score = 1 - quality).
5. The table (`comparison_rows`, `markdown_table`): per re-weighted run
   (`famus_jax.tools.label_issues.rank_label_issues`) and for confident learning, AUROC and
   precision / recall at k = the true number of mislabelled examples, cleanlab's flagged
   set's size, precision and recall, and the compute: one run's wall time (its
   summary.json) against the sum of the K trainings' wall times (the out-of-fold prediction's
   and cleanlab's own seconds are in the JSON: predict_seconds, extra_seconds). Written to
   OUT/comparison.md, OUT/comparison.json (with the provenance: package version, commit, date,
   command, JAX and devices) and OUT/out_of_fold_probabilities.npy.

The cheap parts (folds, assembly, table) are tested with a fake ranking in
tests/test_confident_learning.py; the measured comparison is in docs/results.md (label errors
against confident learning), from scripts/label_issue_comparison.sh.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top

from famus_jax import config_check  # pylint: disable=g-import-not-at-top
from famus_jax.data import build_data  # pylint: disable=g-import-not-at-top
from famus_jax.provenance import provenance  # pylint: disable=g-import-not-at-top
from famus_jax.tools import label_issues  # pylint: disable=g-import-not-at-top
from famus_jax.train import trainer  # pylint: disable=g-import-not-at-top
from famus_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
from famus_jax.train.step import make_eval_logits_fn  # pylint: disable=g-import-not-at-top

MISSING = ('scripts/confident_learning.py needs cleanlab, which famus_jax does not depend on '
           '(AGPL): pip install cleanlab, in the environment that runs this script')
CONFIDENT_LEARNING = 'confident learning (cleanlab, K-fold)'


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list:
  """K sorted int64 index arrays partitioning range(len(labels)), each class dealt evenly.

  Per class (given label), its examples in a seeded random order are dealt to the folds in
  turn, starting where the previous class stopped, so the fold sizes differ by at most one.
  """
  if folds < 2:
    raise ValueError(f'--folds={folds}: cross-validation needs at least 2 folds')
  rng = np.random.default_rng([seed, 0x434C])  # 'CL'
  labels = np.asarray(labels)
  parts, offset = [[] for _ in range(folds)], 0
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    for j, i in enumerate(members):
      parts[(offset + j) % folds].append(i)
    offset = (offset + len(members)) % folds
  return [np.sort(np.asarray(p, np.int64)) for p in parts]


def restricted_data(data, keep: np.ndarray):
  """The run's `DataSplits` with only the training examples `keep` (their noisy labels kept).

  The meta and test sets, the channel statistics (of the whole training set) and the class
  names are the run's.
  """
  info = dict(data.info)
  labels, clean = data.train_labels[keep], data.train_clean_labels[keep]
  info.update(num_train=int(len(keep)), realised_noise_rate=float(np.mean(labels != clean)))
  return dataclasses.replace(data, train_images=data.train_images[keep], train_labels=labels,
                             train_clean_labels=clean, info=info)


def fold_config(config):
  """The run's config with ERM on one network (the network and schedule stay the run's)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.method = 'erm'
  config.meta_set = 'clean'
  config.progress_bar = False
  return config


def train_fold(config, data, keep: np.ndarray, workdir: str) -> dict:
  """ERM with the project's trainer on the training examples `keep`; returns its summary."""
  config = fold_config(config)
  config_check.validate(config)
  return trainer.train_and_evaluate(config, workdir, data=restricted_data(data, keep))


def fold_probabilities(config, data, keep: np.ndarray, held_out: np.ndarray,
                       workdir: str) -> np.ndarray:
  """(len(held_out), C) softmax probabilities of the fold's final network (eval mode)."""
  config = fold_config(config)
  fold = restricted_data(data, keep)
  run = trainer.create_run(config, fold, trainer.data_mesh())
  checkpointer = Checkpointer(workdir, config.keep_checkpoints)
  try:
    found = checkpointer.restore_newest_intact(run.init_state(), lambda step, record: None)
  finally:
    checkpointer.close()
  if found is None:
    raise FileNotFoundError(f'{workdir} has no checkpoint')
  state = found[1]
  logits_fn = jax.jit(make_eval_logits_fn(run.model, run.mean, run.std))
  out = []
  for start in range(0, len(held_out), config.eval_batch_size):
    ids = held_out[start:start + config.eval_batch_size]
    logits = logits_fn(state.params, state.batch_stats, data.train_images[ids])
    out.append(np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1), np.float64))
  return np.concatenate(out)


def out_of_fold_probabilities(num_train: int, folds: list, predict_fn) -> np.ndarray:
  """(N, C): row i from `predict_fn(k, held_out)` of the one fold k that holds i out.

  predict_fn(k, held_out ids) -> (len(held_out), C) probabilities; the folds must
  partition range(num_train).
  """
  rows = None
  filled = np.zeros((num_train,), bool)
  for k, held_out in enumerate(folds):
    probs = np.asarray(predict_fn(k, held_out), np.float64)
    if rows is None:
      rows = np.full((num_train, probs.shape[1]), np.nan)
    if filled[held_out].any():
      raise ValueError(f'fold {k} holds out examples another fold already held out')
    rows[held_out], filled[held_out] = probs, True
  if not filled.all():
    raise ValueError(f'{int((~filled).sum())} examples are in no held-out fold')
  return rows


def cleanlab_ranking(labels: np.ndarray, pred_probs: np.ndarray) -> tuple:
  """(score (N,), flagged bool (N,)): 1 - cleanlab's label quality, and find_label_issues."""
  try:
    from cleanlab.filter import find_label_issues  # pylint: disable=import-outside-toplevel
    from cleanlab.rank import get_label_quality_scores  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(MISSING) from e
  flagged = find_label_issues(labels=labels, pred_probs=pred_probs)
  quality = get_label_quality_scores(labels=labels, pred_probs=pred_probs)
  return 1.0 - np.asarray(quality, np.float64), np.asarray(flagged, bool)


def flagged_scores(flagged: np.ndarray, is_noisy: np.ndarray) -> dict:
  """Size, precision and recall of a flagged set against the true flags."""
  hits = int((flagged & is_noisy).sum())
  size, errors = int(flagged.sum()), int(is_noisy.sum())
  return {'flagged': size, 'flagged_precision': hits / size if size else float('nan'),
          'flagged_recall': hits / errors if errors else float('nan')}


def comparison_rows(runs: list, labels, is_noisy, pred_probs, fold_seconds: list,
                    ranking_fn=cleanlab_ranking) -> list:
  """One dict per re-weighted run and one for confident learning.

  runs: (name, `LabelIssues`, wall seconds of the run) triples; labels, is_noisy: (N,) of the
  training set; pred_probs: (N, C) out-of-fold; fold_seconds: the K trainings' wall times;
  ranking_fn(labels, pred_probs) -> (score, flagged): cleanlab, or a fake in the tests.
  """
  rows = []
  for name, issues, seconds in runs:
    scores = label_issues.evaluate_ranking(issues.score, is_noisy)
    rows.append({'name': name, 'source': issues.source, **scores._asdict(),
                 'trainings': 1, 'train_seconds': seconds, 'extra_seconds': 0.0})
  t0 = time.perf_counter()
  score, flagged = ranking_fn(np.asarray(labels), np.asarray(pred_probs))
  extra = time.perf_counter() - t0
  scores = label_issues.evaluate_ranking(score, is_noisy)
  rows.append({'name': CONFIDENT_LEARNING, 'source': 'self-confidence', **scores._asdict(),
               **flagged_scores(np.asarray(flagged, bool), np.asarray(is_noisy, bool)),
               'trainings': len(fold_seconds), 'train_seconds': float(sum(fold_seconds)),
               'extra_seconds': extra})
  return rows


def _cell(value, digits=4) -> str:
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return '-'
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def markdown_table(rows: list) -> str:
  """The comparison as a Markdown table (one row per ranking)."""
  head = ('| ranking | score from | AUROC | precision@k | recall@k | k | flagged | '
          'flagged precision | flagged recall | trainings | training wall (s) |')
  lines = [head, '|' + '---|' * 11]
  for r in rows:
    lines.append(
        f'| {r["name"]} | {r["source"]} | {_cell(r["auroc"])} | {_cell(r["precision"])} | '
        f'{_cell(r["recall"])} | {r["errors"]} | {_cell(r.get("flagged"))} | '
        f'{_cell(r.get("flagged_precision"))} | {_cell(r.get("flagged_recall"))} | '
        f'{r["trainings"]} | {_cell(r["train_seconds"], 1)} |')
  return '\n'.join(lines)


def run_wall_seconds(workdir: str) -> float:
  """The run's training wall time from its summary.json (NaN when unfinished)."""
  summary = label_issues.read_json(os.path.join(workdir, 'summary.json')) or {}
  return float(summary.get('wall_time_s', float('nan')))


def compare(workdirs: list, folds: int, seed: int, out: str, ranking_fn=cleanlab_ranking) -> list:
  """The whole comparison (module docstring); returns the rows and writes OUT/comparison.*."""
  config = label_issues.load_config(workdirs[0])
  data = build_data(config)
  if (data.train_clean_labels < 0).any():
    raise ValueError(f'{workdirs[0]}: some true labels are unknown (real label noise); the '
                     'comparison needs them all (synthetic noise)')
  runs = []
  for workdir in workdirs:
    issues = label_issues.rank_label_issues(workdir)
    if not np.array_equal(issues.given_label, data.train_labels):
      raise ValueError(f'{workdir} trained on other labels than {workdirs[0]}')
    runs.append((os.path.basename(os.path.normpath(workdir)) + f' ({issues.method})', issues,
                 run_wall_seconds(workdir)))
  parts = stratified_folds(data.train_labels, folds, seed)
  everything = np.arange(data.num_train)
  seconds = []
  for k, held_out in enumerate(parts):
    keep = np.setdiff1d(everything, held_out)
    summary = train_fold(config, data, keep, os.path.join(out, f'fold_{k}'))
    seconds.append(float(summary['wall_time_s']))
  t0 = time.perf_counter()
  probs = out_of_fold_probabilities(data.num_train, parts, lambda k, held_out: fold_probabilities(
      config, data, np.setdiff1d(everything, held_out), held_out, os.path.join(out, f'fold_{k}')))
  predict_seconds = time.perf_counter() - t0
  rows = comparison_rows(runs, data.train_labels, data.train_labels != data.train_clean_labels,
                         probs, seconds, ranking_fn)
  rows[-1]['predict_seconds'] = predict_seconds
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'comparison.json'), 'w') as f:
    json.dump({'workdirs': workdirs, 'folds': folds, 'seed': seed, 'rows': rows,
               'provenance': provenance()}, f, indent=2)
  with open(os.path.join(out, 'comparison.md'), 'w') as f:
    f.write(markdown_table(rows) + '\n')
  np.save(os.path.join(out, 'out_of_fold_probabilities.npy'), probs)
  return rows


def cleanlab_ranking_check() -> None:
  """SystemExit with the one-line MISSING message, before any training, without cleanlab."""
  try:
    import cleanlab  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise SystemExit(MISSING) from e


def main(argv=None) -> list:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdirs', required=True,
                      help='comma-separated finished runs on the same data (the first sets the '
                      'data, network and schedule of the K trainings)')
  parser.add_argument('--folds', type=int, default=5, help='K of the K-fold cross-validation')
  parser.add_argument('--seed', type=int, default=0, help='seed of the fold split')
  parser.add_argument('--out', required=True, help='directory for the fold runs and the table')
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  cleanlab_ranking_check()
  rows = compare(args.workdirs.split(','), args.folds, args.seed, args.out)
  print(markdown_table(rows))
  return rows


if __name__ == '__main__':
  main()
