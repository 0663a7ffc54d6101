"""Suspected label errors of a finished or interrupted run, ranked from its per-example record.

  famus-label-issues WORKDIR --out=issues.csv [--plot=scores.png]
  python -m famus_jax.tools.label_issues WORKDIR --out=issues.csv

Reads the run's config.json and its newest intact checkpoint, and ranks the
training examples by how strongly the run judged their given label wrong.
The score of example i is in [0, 1], higher is more suspicious, and comes
from one of three judgements, the one the method catalogue declares for the
method (`famus_jax.catalogue.MethodEntry.label_issue_score`; `score_source`):

  mean_weight        the running mean weight m_i = weight_sum_i / seen_i of
                     the per-example record (`famus_jax.train.record`; uniform
                     weight = 1): score_i = 1 - m_i / max_j m_j, the max over
                     the seen examples (1 when no example ever got a positive
                     weight). Every single-network method but FSR.
  meta_margin        a margin score P_i the method keeps in its method state
                     under the declared key (FSR's momentum meta-margin score:
                     a higher margin means the loss drops more when i is
                     up-weighted, a cleaner-looking example), rank-normalised
                     and reversed: score_i = 1 - (r_i - 1) / (n - 1), r_i the
                     ascending rank of P_i among the n visited examples
                     (ties: their mean rank), so the lowest margin scores 1.
  clean_probability  the co-trained pair's last division: score_i = 1 - c_i,
                     c_i the mean of both members' clean probabilities
                     (`famus_jax.cotrain.pair`). DivideMix, and every run on
                     the pair's pseudo-clean meta sets whatever its method.
                     The pair's other columns are member A's record.

An example the run holds no judgement of (never drawn; margin: never visited;
the pair: no division yet) has score NaN, is listed last and is left out of
the evaluation. Methods whose weights are uniform (erm, mlc, famus on the MLC
base) give every seen example score 0: the ranking then says nothing, and the
report says so.

Where the true labels are known (synthetic noise), `evaluate_ranking` scores
the ranking against the true flags: precision and recall among the k most
suspicious examples, k = the number of mislabelled examples (at this k the
two are equal by construction; both are printed because the comparison with
confident learning flags a set of its own size), and the AUROC. Ties in the
score count at their expected value under a random order (so a constant
score has AUROC 0.5 and precision the noise rate).
"""

import csv
import os
import sys
from typing import NamedTuple, Optional

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from famus_jax import catalogue
from famus_jax.cotrain.pair import co_trained
from famus_jax.data import build_data
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.trainer import create_run, data_mesh
from famus_jax.tools.report.loading import read_json, with_schema_defaults
from famus_jax.tools.report.plots import CLEAN_COLOUR, NOISY_COLOUR, matplotlib_modules

MEAN_WEIGHT, META_MARGIN, CLEAN_PROBABILITY = (catalogue.MEAN_WEIGHT, catalogue.META_MARGIN,
                                              catalogue.CLEAN_PROBABILITY)


def declared_score(config) -> catalogue.LabelIssueScore:
  """The judgement that ranks a run of `config`: its method's catalogue entry declares it; a run
  on the pair's pseudo-clean meta sets is judged by its division."""
  if co_trained(config):
    return catalogue.LabelIssueScore(CLEAN_PROBABILITY)
  spec = catalogue.entry(config.method)
  return spec.label_issue_score if spec is not None else catalogue.LabelIssueScore()


def score_source(config) -> str:
  """Which judgement ranks a run of `config` (module docstring): MEAN_WEIGHT, META_MARGIN or
  CLEAN_PROBABILITY."""
  return declared_score(config).source


class LabelIssues(NamedTuple):
  """One run's per-example judgement, in training-index order ((N,) arrays).

  index, given_label, predicted_label (the record's last_pred, -1 if never
  drawn), score (module docstring; NaN: no judgement), judgement (the quantity
  the score comes from: mean weight, meta margin or clean probability; NaN
  where none), seen (times drawn), true_label (-1 where unknown; None when no
  true label is known). source: MEAN_WEIGHT, META_MARGIN or CLEAN_PROBABILITY;
  method: the catalogue's label of the run; step: the checkpoint's step;
  notes: lines worth printing about how far the ranking can be trusted.
  """
  index: np.ndarray
  given_label: np.ndarray
  predicted_label: np.ndarray
  score: np.ndarray
  judgement: np.ndarray
  seen: np.ndarray
  true_label: Optional[np.ndarray]
  source: str
  method: str
  step: int
  notes: tuple = ()

  @property
  def is_noisy(self) -> Optional[np.ndarray]:
    """bool (N,) given != true label (False where the true label is unknown), or None."""
    if self.true_label is None:
      return None
    return (self.true_label >= 0) & (self.given_label != self.true_label)

  def order(self) -> np.ndarray:
    """Positions from most to least suspicious: score descending, NaN last, ties by index."""
    key = np.where(np.isnan(self.score), -np.inf, self.score)
    return np.lexsort((self.index, -key))

  def evaluation(self) -> Optional['RankingScores']:
    """`evaluate_ranking` over the examples whose true label is known; None if none is."""
    if self.true_label is None:
      return None
    known = self.true_label >= 0
    return evaluate_ranking(self.score[known], self.is_noisy[known])


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config.json over the schema's defaults, as a ConfigDict."""
  values = read_json(os.path.join(workdir, 'config.json'))
  if values is None:
    raise FileNotFoundError(f'{workdir} has no config.json: not a famus_jax run workdir')
  return ml_collections.ConfigDict(with_schema_defaults(values))


def restore_run(workdir: str):
  """(config, data, state, step): a workdir's newest intact checkpoint and the data it trained on.

  The state is the trainer's (a TrainState, or the pair's PairState), on the host.
  """
  config = load_config(workdir)
  data = build_data(config)
  template = create_run(config, data, data_mesh()).init_state()
  checkpointer = Checkpointer(workdir, config.keep_checkpoints)
  try:
    found = checkpointer.restore_newest_intact(template, lambda step, record: None)
  finally:
    checkpointer.close()
  if found is None:
    raise FileNotFoundError(f'{workdir} has no checkpoint yet: nothing was recorded')
  step, state, _, _ = found
  return config, data, jax.device_get(state), step


def mean_weight_score(weight_sum, seen) -> tuple:
  """(score, mean weight): 1 - m_i / max m over the seen examples; NaN where never seen."""
  seen = np.asarray(seen)
  mean = np.where(seen > 0, np.asarray(weight_sum, np.float64) / np.maximum(seen, 1), np.nan)
  top = np.nanmax(mean) if (seen > 0).any() else np.nan
  score = 1.0 - mean / top if top > 0 else np.where(seen > 0, 1.0, np.nan)
  return score, mean


def average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ascending ranks of `values`, tied values sharing their mean rank."""
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  before = np.cumsum(counts) - counts
  return (before + (counts + 1) / 2.0)[inverse.reshape(-1)]


def margin_score(margin, visits) -> tuple:
  """(score, margin): 1 - (r_i - 1) / (n - 1) over the n visited examples; NaN elsewhere."""
  margin = np.asarray(margin, np.float64)
  visited = np.asarray(visits) > 0
  score = np.full(margin.shape, np.nan)
  n = int(visited.sum())
  if n:
    ranks = average_ranks(margin[visited])
    score[visited] = 1.0 - (ranks - 1.0) / max(n - 1, 1)
  return score, np.where(visited, margin, np.nan)


def rank_label_issues(workdir: str) -> LabelIssues:
  """The run's judgement of every training example's label (module docstring)."""
  config, data, state, step = restore_run(workdir)
  return label_issues_of(config, data, state, step)


def label_issues_of(config, data, state, step: int) -> LabelIssues:
  """`rank_label_issues` of a restored (host) state of a run of `config` on `data`."""
  declared = declared_score(config)
  source = declared.source
  notes = []
  if source == CLEAN_PROBABILITY:
    record = state.a.record
    clean = (np.asarray(state.clean_prob_a, np.float64)
             + np.asarray(state.clean_prob_b, np.float64)) / 2
    if int(state.division_epoch) < 0:
      clean = np.full(clean.shape, np.nan)
      notes.append('the pair has not divided the training set yet (its warm-up has not ended):'
                   ' no example is judged')
    score, judgement = 1.0 - clean, clean
  elif source == META_MARGIN:
    record = state.record
    score, judgement = margin_score(state.method_state[declared.key],
                                    state.method_state[declared.visits])
  else:  # MEAN_WEIGHT (LabelIssueScore admits no other source)
    record = state.record
    score, judgement = mean_weight_score(record.weight_sum, record.seen)
    seen_scores = score[np.isfinite(score)]
    if seen_scores.size and np.all(seen_scores == seen_scores[0]):
      notes.append(f'every example got the same mean weight ({config.method} does not '
                   're-weight): the ranking carries no information')
  unjudged = int(np.isnan(score).sum())
  if unjudged and unjudged < len(score):
    notes.append(f'{unjudged} of {len(score)} examples were never judged (score NaN, listed '
                 'last, left out of the evaluation)')
  clean_labels = np.asarray(data.train_clean_labels)
  return LabelIssues(
      index=np.arange(data.num_train), given_label=np.asarray(data.train_labels, np.int64),
      predicted_label=np.asarray(record.last_pred, np.int64), score=score,
      judgement=judgement, seen=np.asarray(record.seen, np.int64),
      true_label=clean_labels.astype(np.int64) if (clean_labels >= 0).any() else None,
      source=source, method=catalogue.label(config.to_dict()), step=int(step),
      notes=tuple(notes))


class RankingScores(NamedTuple):
  """How well a suspicion score finds the mislabelled examples (`evaluate_ranking`)."""
  evaluated: int      # examples with a finite score
  unscored: int       # examples left out (NaN score)
  errors: int         # mislabelled among the evaluated: k
  precision: float    # expected share of mislabelled among the k most suspicious
  recall: float       # expected share of the k mislabelled found among them
  auroc: float        # P(score of a mislabelled > score of a clean one), ties count 1/2


def evaluate_ranking(score, is_noisy, k: Optional[int] = None) -> RankingScores:
  """Precision and recall at k (default: the number of mislabelled examples) and AUROC.

  score: (n,) higher = more suspicious, NaN = not judged (left out);
  is_noisy: (n,) bool, the true flags. Ties at the cut count at their expected
  value under a random order; the AUROC is the tie-aware rank-sum (Mann-Whitney)
  statistic. NaN where a quantity is undefined (no error, or no clean example).
  """
  score = np.asarray(score, np.float64)
  noisy = np.asarray(is_noisy, bool)
  finite = np.isfinite(score)
  score, noisy = score[finite], noisy[finite]
  n_pos, n_neg = int(noisy.sum()), int((~noisy).sum())
  k = n_pos if k is None else int(k)
  precision = recall = float('nan')
  if 0 < k <= len(score):
    cut = np.sort(score)[::-1][k - 1]
    above, tied = score > cut, score == cut
    hits = noisy[above].sum() + (k - above.sum()) * noisy[tied].sum() / tied.sum()
    precision = float(hits / k)
    recall = float(hits / n_pos) if n_pos else float('nan')
  auroc = float('nan')
  if n_pos and n_neg:
    ranks = average_ranks(score)
    auroc = float((ranks[noisy].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
  return RankingScores(int(finite.sum()), int((~finite).sum()), n_pos, precision, recall, auroc)


def _number(x: float) -> str:
  return '' if np.isnan(x) else format(float(x), '.9g')


def write_csv(issues: LabelIssues, path: str) -> None:
  """The examples, most suspicious first: index, given_label, predicted_label, score, seen,
  the judgement (its source's name), and true_label, is_noisy where the true labels are known.
  """
  header = ['index', 'given_label', 'predicted_label', 'score', 'seen', issues.source]
  truth = issues.true_label is not None
  if truth:
    header += ['true_label', 'is_noisy']
    noisy = issues.is_noisy
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for i in issues.order():
      row = [int(issues.index[i]), int(issues.given_label[i]), int(issues.predicted_label[i]),
             _number(issues.score[i]), int(issues.seen[i]), _number(issues.judgement[i])]
      if truth:
        known = issues.true_label[i] >= 0
        row += [int(issues.true_label[i]) if known else '', int(noisy[i]) if known else '']
      writer.writerow(row)


def plot_scores(issues: LabelIssues, path: str) -> None:
  """A histogram of the score, clean and mislabelled apart where the truth is known."""
  plt = matplotlib_modules()[0]
  fig, ax = plt.subplots(figsize=(6.0, 3.6))
  finite = np.isfinite(issues.score)
  bins = np.linspace(0.0, 1.0, 41)
  if issues.true_label is None:
    ax.hist(issues.score[finite], bins=bins, color='#444444', label='all (truth unknown)')
  else:
    known = finite & (issues.true_label >= 0)
    noisy = issues.is_noisy
    for mask, colour, name in ((known & ~noisy, CLEAN_COLOUR, 'clean'),
                               (known & noisy, NOISY_COLOUR, 'mislabelled')):
      ax.hist(issues.score[mask], bins=bins, color=colour, alpha=0.6, density=True,
              label=f'{name} ({int(mask.sum())})')
  ax.set_xlabel(f'label-issue score (1 = most suspicious; from {issues.source})')
  ax.set_ylabel('density' if issues.true_label is not None else 'examples')
  ax.set_title(f'{issues.method}, step {issues.step}', fontsize='medium')
  ax.legend(fontsize='small', frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def summary_lines(issues: LabelIssues) -> list:
  """What the CLI prints: the run, the score's source, the notes and the evaluation."""
  lines = [f'{issues.method} at step {issues.step}: {len(issues.score)} training examples '
           f'ranked by {issues.source}']
  lines += [f'note: {n}' for n in issues.notes]
  scores = issues.evaluation()
  if scores is None:
    lines.append('the true labels are unknown: no precision, recall or AUROC')
  else:
    lines.append(f'against the true labels ({scores.evaluated} examples, {scores.errors} '
                 f'mislabelled): precision@{scores.errors} {scores.precision:.4f}, '
                 f'recall@{scores.errors} {scores.recall:.4f}, AUROC {scores.auroc:.4f}')
  return lines


def define_flags() -> None:
  flags.DEFINE_string('out', None, 'CSV file to write (the examples, most suspicious first).')
  flags.DEFINE_string('plot', '', 'also write a histogram of the score here (.png; needs the '
                      'report extra: matplotlib).')
  flags.mark_flag_as_required('out')


def main(argv) -> None:
  if len(argv) != 2:
    raise app.UsageError('give one run WORKDIR: famus-label-issues WORKDIR --out=issues.csv')
  logging.set_verbosity(logging.WARNING)
  if flags.FLAGS.plot:
    matplotlib_modules()  # the one-line error before any work when matplotlib is missing
  try:
    issues = rank_label_issues(argv[1])
  except FileNotFoundError as e:
    sys.exit(f'famus-label-issues: {e}')
  write_csv(issues, flags.FLAGS.out)
  print('\n'.join(summary_lines(issues)))
  print(f'wrote {flags.FLAGS.out}')
  if flags.FLAGS.plot:
    plot_scores(issues, flags.FLAGS.plot)
    print(f'wrote {flags.FLAGS.plot}')


def run() -> None:
  """The console script `famus-label-issues`."""
  define_flags()
  app.run(main)


if __name__ == '__main__':
  run()
