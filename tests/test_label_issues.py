"""The label-issue report (famus_jax/tools/label_issues.py): scores from a run's record.

Tiny runs of mwnet, FSR and the co-trained pair; the CSV against the checkpoint's record read
independently; the ranking metrics against scikit-learn and hand computations.
"""

import csv
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from famus_jax.data import build_data
from famus_jax.presets import tiny
from famus_jax.tools import label_issues as li
from famus_jax.train.checkpoint import Checkpointer
from famus_jax.train.trainer import create_run, data_mesh, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def tiny_config(**overrides):
  c = tiny.get_config()
  c.num_steps, c.checkpoint_every, c.eval_every, c.log_every = STEPS, STEPS, STEPS, STEPS
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def restored(config, workdir):
  """(data, host state) of the workdir's newest checkpoint, read without the tool's loader."""
  data = build_data(config)
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  state, _ = ckpt.restore(create_run(config, data, data_mesh()).init_state())
  ckpt.close()
  return data, jax.device_get(state)


@pytest.fixture(scope='module')
def mwnet_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mwnet'))
  config = tiny_config(method='mwnet')
  train_and_evaluate(config, workdir)
  return config, workdir


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_cli_csv_matches_the_record_of_the_checkpoint(mwnet_run, tmp_path):
  config, workdir = mwnet_run
  out, plot = tmp_path / 'issues.csv', tmp_path / 'scores.png'
  proc = subprocess.run([sys.executable, '-m', 'famus_jax.tools.label_issues', workdir,
                         f'--out={out}', f'--plot={plot}'], cwd=ROOT, capture_output=True,
                        text=True, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'ranked by mean_weight' in proc.stdout and 'AUROC' in proc.stdout, proc.stdout
  assert plot.stat().st_size > 1000
  rows = read_csv(out)
  data, state = restored(config, workdir)
  record = state.record
  assert len(rows) == data.num_train
  assert int(record.seen.sum()) == STEPS * config.batch_size
  assert sum(int(r['seen']) for r in rows) == STEPS * config.batch_size
  assert list(rows[0]) == ['index', 'given_label', 'predicted_label', 'score', 'seen',
                           'mean_weight', 'true_label', 'is_noisy']
  seen = record.seen > 0
  mean = record.weight_sum[seen] / record.seen[seen]
  by_index = {int(r['index']): r for r in rows}
  for i in range(data.num_train):
    r = by_index[i]
    assert int(r['seen']) == record.seen[i]
    assert int(r['given_label']) == data.train_labels[i]
    assert int(r['predicted_label']) == record.last_pred[i]
    assert int(r['true_label']) == data.train_clean_labels[i]
    assert int(r['is_noisy']) == int(data.train_labels[i] != data.train_clean_labels[i])
    if record.seen[i]:
      m = record.weight_sum[i] / record.seen[i]
      np.testing.assert_allclose(float(r['mean_weight']), m, rtol=1e-6)
      np.testing.assert_allclose(float(r['score']), 1 - m / mean.max(), rtol=1e-6, atol=1e-7)
    else:
      assert r['score'] == r['mean_weight'] == ''
  scores = [float(r['score']) for r in rows if r['score']]
  assert scores == sorted(scores, reverse=True)  # most suspicious first, unseen last
  assert all(r['score'] == '' for r in rows[len(scores):])
  assert len(scores) == int(seen.sum())


def test_rank_label_issues_evaluates_against_the_true_flags(mwnet_run):
  config, workdir = mwnet_run
  issues = li.rank_label_issues(workdir)
  assert issues.source == li.MEAN_WEIGHT and issues.method == 'mwnet[reuse]' and issues.step == STEPS
  scores = issues.evaluation()
  finite = np.isfinite(issues.score)
  assert scores.evaluated == finite.sum() and scores.unscored == (~finite).sum()
  assert scores.errors == issues.is_noisy[finite].sum()
  assert scores.auroc == pytest.approx(roc_auc_score(issues.is_noisy[finite],
                                                     issues.score[finite]))
  assert any('never judged' in n for n in issues.notes)
  del config


def test_fsr_ranks_by_its_meta_margin_score(tmp_path):
  config = tiny_config(method='fsr', num_meta=0, num_steps=3, checkpoint_every=3, eval_every=3)
  train_and_evaluate(config, str(tmp_path))
  issues = li.rank_label_issues(str(tmp_path))
  _, state = restored(config, str(tmp_path))
  margin, visits = state.method_state['score'], state.method_state['visits']
  assert issues.source == li.META_MARGIN
  visited = visits > 0
  assert visited.sum() == 3 * config.batch_size  # the first epoch's batches are disjoint
  np.testing.assert_array_equal(np.isfinite(issues.score), visited)
  np.testing.assert_allclose(issues.judgement[visited], margin[visited])
  # Lowest margin = most suspicious (1), highest = 0, order reversed.
  assert issues.score[visited][np.argmin(margin[visited])] == 1.0
  assert issues.score[visited][np.argmax(margin[visited])] == 0.0
  order = np.argsort(margin[visited], kind='stable')
  assert np.all(np.diff(issues.score[visited][order]) <= 0)
  np.testing.assert_array_equal(issues.seen, state.record.seen)


def test_the_pair_ranks_by_its_clean_probability(tmp_path):
  # 128 examples: 8 steps per epoch; the warm-up (ERM steps) is the whole run, and its end
  # divides the training set.
  config = tiny_config(method='mwnet', meta_set='pseudo_clean', num_meta=0, num_steps=8,
                       checkpoint_every=8, eval_every=8, **{'synthetic.num_train': 128,
                                                           'cotrain.warmup_epochs': 1})
  train_and_evaluate(config, str(tmp_path))
  issues = li.rank_label_issues(str(tmp_path))
  _, state = restored(config, str(tmp_path))
  assert int(state.division_epoch) == 1
  assert issues.source == li.CLEAN_PROBABILITY and issues.method == 'mwnet[reuse,pseudo_clean]'
  clean = (state.clean_prob_a.astype(np.float64) + state.clean_prob_b) / 2
  np.testing.assert_allclose(issues.score, 1 - clean)
  np.testing.assert_array_equal(issues.seen, state.a.record.seen)
  assert issues.seen.sum() == 8 * config.batch_size
  assert issues.evaluation().evaluated == 128


def test_score_source_follows_the_catalogue():
  c = ml_collections.ConfigDict({'method': 'mwnet', 'meta_set': 'clean'})
  assert li.score_source(c) == li.MEAN_WEIGHT
  c.method = 'fsr'
  assert li.score_source(c) == li.META_MARGIN
  c.method = 'dividemix'
  assert li.score_source(c) == li.CLEAN_PROBABILITY
  c.method, c.meta_set = 'famus', 'pseudo_clean'
  assert li.score_source(c) == li.CLEAN_PROBABILITY


def test_mean_weight_and_margin_scores_by_hand():
  score, mean = li.mean_weight_score([2.0, 0.0, 3.0, 0.0], [2, 1, 1, 0])
  np.testing.assert_allclose(mean[:3], [1.0, 0.0, 3.0])
  np.testing.assert_allclose(score[:3], [1 - 1 / 3, 1.0, 0.0])
  assert np.isnan(score[3]) and np.isnan(mean[3])
  score, _ = li.mean_weight_score([0.0, 0.0], [1, 1])  # nothing ever got weight
  np.testing.assert_array_equal(score, [1.0, 1.0])
  # margins 0.5, -1, 0.5 (tied), 2, never visited: ranks 2.5, 1, 2.5, 4 of n = 4.
  score, _ = li.margin_score([0.5, -1.0, 0.5, 2.0, 9.0], [1, 3, 2, 1, 0])
  np.testing.assert_allclose(score[:4], [0.5, 1.0, 0.5, 0.0])
  assert np.isnan(score[4])


@pytest.mark.parametrize('seed', range(5))
def test_auroc_equals_scikit_learn_with_ties(seed):
  rng = np.random.default_rng(seed)
  n = 200
  noisy = rng.random(n) < 0.3
  score = np.round(rng.random(n) + 0.4 * noisy, 1)  # coarse: many ties
  result = li.evaluate_ranking(score, noisy)
  assert result.auroc == pytest.approx(roc_auc_score(noisy, score), abs=1e-12)
  assert li.evaluate_ranking(np.zeros(n), noisy).auroc == 0.5


def test_precision_and_recall_at_the_number_of_errors_by_hand():
  noisy = np.array([1, 0, 1, 0, 0, 1], bool)  # 3 errors: k = 3
  # Top 3 by score: ids 0 (0.9), 1 (0.8), 5 (0.7): 2 errors.
  r = li.evaluate_ranking([0.9, 0.8, 0.1, 0.2, 0.3, 0.7], noisy)
  assert (r.errors, r.precision, r.recall) == (3, 2 / 3, 2 / 3)
  # A tie across the cut: ids 0 (0.9) above it, then ids 1, 2, 3 tied at 0.5 for 2 slots,
  # one of the three an error: expected hits 1 + 2 * 1/3.
  r = li.evaluate_ranking([0.9, 0.5, 0.5, 0.5, 0.1, 0.2], noisy)
  assert r.precision == pytest.approx((1 + 2 / 3) / 3)
  # NaN scores are left out; k = 4 flags: 2 of the 2 errors among the evaluated found.
  r = li.evaluate_ranking([0.9, np.nan, 0.8, 0.1, 0.2, np.nan], noisy, k=4)
  assert (r.evaluated, r.unscored, r.errors) == (4, 2, 2)
  assert (r.precision, r.recall) == (0.5, 1.0)
  # AUROC by hand: errors 0.9, 0.8 against clean 0.1, 0.2: every pair ordered.
  assert r.auroc == 1.0
