"""The plumbing of scripts/confident_learning.py, without cleanlab (a fake ranking stands in).

The folds, the out-of-fold assembly, the comparison table, and one whole comparison at tiny
scale: two ERM folds trained by the project's trainer on a tiny MW-Net run's training set.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

from famus_jax.presets import tiny
from famus_jax.tools import label_issues as li
from famus_jax.train.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
  spec = importlib.util.spec_from_file_location(
      'confident_learning', os.path.join(ROOT, 'scripts', 'confident_learning.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cl = load_script()


def fake_ranking(labels, pred_probs):
  """1 - the probability of the given label (cleanlab's self-confidence), flagged above 0.5."""
  score = 1.0 - pred_probs[np.arange(len(labels)), labels]
  return score, score > 0.5


def test_folds_partition_the_training_set_stratified_by_label():
  labels = np.repeat(np.arange(4), [10, 7, 5, 3])
  folds = cl.stratified_folds(labels, 5, seed=0)
  ids = np.concatenate(folds)
  np.testing.assert_array_equal(np.sort(ids), np.arange(len(labels)))
  sizes = [len(f) for f in folds]
  assert max(sizes) - min(sizes) <= 1
  for c, count in enumerate([10, 7, 5, 3]):
    per_fold = [int(np.sum(labels[f] == c)) for f in folds]
    assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count
  assert [f.tolist() for f in cl.stratified_folds(labels, 5, seed=0)] == [
      f.tolist() for f in folds]
  with pytest.raises(ValueError, match='at least 2'):
    cl.stratified_folds(labels, 1, seed=0)


def test_each_row_comes_from_the_fold_that_held_it_out():
  folds = cl.stratified_folds(np.arange(11) % 3, 3, seed=1)
  # Fold k predicts class k with certainty: row i must say which fold held i out.
  probs = cl.out_of_fold_probabilities(11, folds, lambda k, held: np.eye(3)[[k] * len(held)])
  for k, held in enumerate(folds):
    assert np.all(probs[held].argmax(1) == k)
  with pytest.raises(ValueError, match='in no held-out fold'):
    cl.out_of_fold_probabilities(11, folds[:2], lambda k, held: np.eye(3)[[k] * len(held)])
  with pytest.raises(ValueError, match='already held out'):
    cl.out_of_fold_probabilities(11, [folds[0], folds[0]] + folds[1:],
                                 lambda k, held: np.eye(3)[[0] * len(held)])


def test_comparison_rows_and_table():
  labels = np.array([0, 1, 1, 0, 2, 2])
  noisy = np.array([1, 0, 0, 1, 0, 0], bool)
  probs = np.full((6, 3), 0.1)
  probs[np.arange(6), [1, 1, 1, 2, 2, 0]] = 0.8  # wrong for 0, 3 (errors) and 5 (clean)
  issues = li.LabelIssues(index=np.arange(6), given_label=labels, predicted_label=labels,
                          score=np.array([0.9, 0.1, 0.2, 0.8, 0.3, np.nan]),
                          judgement=np.zeros(6), seen=np.ones(6, int), true_label=labels,
                          source=li.MEAN_WEIGHT, method='mwnet', step=10)
  rows = cl.comparison_rows([('run (mwnet)', issues, 12.5)], labels, noisy, probs,
                            [3.0, 4.0, 5.0], fake_ranking)
  run, conf = rows
  assert (run['auroc'], run['precision'], run['trainings'], run['train_seconds']) == (
      1.0, 1.0, 1, 12.5)
  assert run['unscored'] == 1
  # Confident learning (fake): scores 0.9 for 0, 3, 5; 0.2 for the rest.
  assert conf['trainings'] == 3 and conf['train_seconds'] == 12.0
  assert conf['precision'] == pytest.approx(2 / 3) and conf['auroc'] == 0.875
  assert (conf['flagged'], conf['flagged_precision'], conf['flagged_recall']) == (3, 2 / 3, 1.0)
  table = cl.markdown_table(rows).splitlines()
  assert len(table) == 4 and table[2].startswith('| run (mwnet) | mean_weight | 1.0000 |')
  assert '| 3 | 0.6667 | 1.0000 | 3 | 12.0 |' in table[3]


def test_without_cleanlab_the_script_says_how_to_install_it():
  if importlib.util.find_spec('cleanlab') is not None:
    pytest.skip('cleanlab is installed here')
  with pytest.raises(SystemExit, match='pip install cleanlab'):
    cl.main(['--workdirs=nowhere', '--out=nowhere'])


def test_a_whole_comparison_at_tiny_scale(tmp_path):
  config = tiny.get_config()
  config.num_steps, config.checkpoint_every, config.eval_every = 4, 4, 4
  config.synthetic.num_train = 128
  run_dir = str(tmp_path / 'run')
  train_and_evaluate(config, run_dir)
  out = str(tmp_path / 'cl')
  rows = cl.compare([run_dir], 2, 0, out, ranking_fn=fake_ranking)
  n = 128 - config.num_meta
  folds = cl.stratified_folds(li.rank_label_issues(run_dir).given_label, 2, 0)
  for k, held in enumerate(folds):
    with open(os.path.join(out, f'fold_{k}', 'data_info.json')) as f:
      assert json.load(f)['num_train'] == n - len(held)
    with open(os.path.join(out, f'fold_{k}', 'config.json')) as f:
      assert json.load(f)['method'] == 'erm'
  probs = np.load(os.path.join(out, 'out_of_fold_probabilities.npy'))
  assert probs.shape == (n, 10)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  assert [r['trainings'] for r in rows] == [1, 2]
  assert rows[1]['evaluated'] == n and rows[1]['train_seconds'] > 0
  with open(os.path.join(out, 'comparison.md')) as f:
    assert f.read().count('\n') == 4
  with open(os.path.join(out, 'comparison.json')) as f:
    made = json.load(f)['provenance']
  assert made['package_version'] and made['jax'] and made['date']
