"""famus_jax.catalogue: one entry per method is what the registry, report, benchmark and peer read.

A fake method added to the catalogue alone is labelled, benchmarked and grouped
in the report's tables, and its runs' label issues are ranked by the judgement it
declares; the labels of the MLC variants keep them apart; every
factory path resolves (where its module exists).
"""

import importlib
import importlib.util
import json
import os
import types

import ml_collections
import numpy as np
import pytest

from famus_jax import catalogue, method_registry
from famus_jax.catalogue import BenchmarkVariant, LabelIssueScore, MethodEntry, Variant
from famus_jax.tools import benchmark, label_issues, report
from famus_jax.train.record import ExampleRecord

FAKE = MethodEntry(
    'fake', 'famus_jax.method_registry:create_erm', group='fake',
    variants=(Variant('fake.form', {'b': 'b'}, stem=True), Variant('fake.mode', default='on')),
    ablation_fields=('fake.',),
    benchmarks=(BenchmarkVariant('fake', {'method': 'fake'}),
                BenchmarkVariant('fake_b', {'method': 'fake', 'fake.form': 'b'}, peer=False)),
    peer='erm',
    label_issue_score=LabelIssueScore(catalogue.META_MARGIN, 'fake_margin', 'fake_visits'))


@pytest.fixture
def fake(monkeypatch):
  monkeypatch.setitem(catalogue.CATALOGUE, 'fake', FAKE)


def write_run(root, name, config, best, last):
  """A finished run workdir: one eval at step 10 (best) and one at 20 (last). The meta
  methods' actual step is the papers' (`recompute`) unless `config` names another."""
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  config = {'dataset': 'fashion_mnist', 'noise_type': 'symmetric', 'noise_rate': 0.4,
            'model': 'resnet', 'depth': 8, 'num_epochs': 2,
            'meta': {'actual_step': 'recompute'}, **config}
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  events = [{'event': catalogue.EVAL, 'step': s, catalogue.TEST_ACCURACY: a,
             catalogue.TRAIN_TIME_S: 0.1 * s} for s, a in ((10, best), (20, last))]
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(e) + '\n' for e in events)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'steps': 20, 'best_test_accuracy': best, 'last_test_accuracy': last,
               'wall_time_s': 10.0}, f)
  return workdir


def test_a_fake_method_is_labelled_benchmarked_and_reported(fake, tmp_path):
  assert report.method_label({'method': 'fake'}) == 'fake'
  assert report.method_label({'method': 'fake', 'fake': {'form': 'b'}}) == 'fake(b)'
  assert report.method_label({'method': 'fake', 'fake': {'form': 'b', 'mode': 'off'}}) == \
      'fake(b)[off]'
  specs = benchmark.method_specs()
  assert specs['fake_b'].overrides == {'method': 'fake', 'fake.form': 'b'}
  assert benchmark.peer_method('fake') == 'erm' and benchmark.peer_method('fake_b') is None
  assert 'fake' in method_registry.METHODS
  runs = str(tmp_path / 'runs')
  values = {('fake', 0): (0.70, 0.60), ('fake', 1): (0.72, 0.64), ('fake_b', 0): (0.5, 0.4),
            ('fake_rate', 0): (0.3, 0.2), ('erm', 0): (0.6, 0.5)}
  configs = {'fake': {'method': 'fake'}, 'fake_b': {'method': 'fake', 'fake': {'form': 'b'}},
             'fake_rate': {'method': 'fake', 'fake': {'rate': 0.5}}, 'erm': {'method': 'erm'}}
  for (name, seed), (best, last) in values.items():
    write_run(runs, f'{name}_s{seed}', {**configs[name], 'seed': seed}, best, last)
  result = report.make_report([runs], str(tmp_path / 'out'))
  (setting, methods), = result['accuracy'].items()
  # The catalogue's order (the fake entry last), the plain label before its variants.
  assert list(methods) == ['erm', 'fake', 'fake(b)', 'fake[rate=0.5]']
  assert methods['fake']['seeds'] == [0, 1]
  last = 100 * np.array([0.60, 0.64])
  np.testing.assert_allclose(methods['fake']['last_mean_std'], [last.mean(), last.std(ddof=1)])
  assert result['grid'][setting]['fake']['minus_erm'][:2] == (pytest.approx(10.0), None)
  text = open(result['report']).read()
  assert '| fake | 2 (s0, s1) |' in text and '| fake(b) | 1 (s0) |' in text


def test_a_fake_methods_declared_label_issue_score_ranks_its_runs(fake):
  config = ml_collections.ConfigDict({'method': 'fake', 'meta_set': 'clean'})
  assert label_issues.score_source(config) == catalogue.META_MARGIN
  # A restored state: the margin the fake method keeps, not the record's (uniform) weights.
  state = types.SimpleNamespace(
      record=ExampleRecord(weight_sum=np.array([1.0, 1.0, 1.0, 0.0], np.float32),
                           seen=np.array([1, 1, 1, 0]), last_pred=np.array([0, 1, 2, -1])),
      method_state={'fake_margin': np.array([0.5, -1.0, 2.0, 0.0]),
                    'fake_visits': np.array([1, 1, 1, 0])})
  data = types.SimpleNamespace(num_train=4, train_labels=np.array([0, 1, 2, 0]),
                               train_clean_labels=np.array([0, 2, 2, 0]))
  issues = label_issues.label_issues_of(config, data, state, 7)
  assert (issues.source, issues.method, issues.step) == (catalogue.META_MARGIN, 'fake', 7)
  # Ascending margin ranks 2, 1, 3 of the 3 visited examples; the unvisited one unjudged.
  np.testing.assert_allclose(issues.score[:3], [0.5, 1.0, 0.0])
  assert np.isnan(issues.score[3])
  np.testing.assert_array_equal(issues.predicted_label, [0, 1, 2, -1])
  # On the pair's pseudo-clean meta sets the division judges, whatever the method declares.
  config.meta_set = 'pseudo_clean'
  assert label_issues.score_source(config) == catalogue.CLEAN_PROBABILITY
  # The catalogue's own entries, and declarations it refuses.
  assert catalogue.entry('mwnet').label_issue_score == LabelIssueScore(catalogue.MEAN_WEIGHT)
  assert catalogue.entry('fsr').label_issue_score.source == catalogue.META_MARGIN
  assert catalogue.entry('dividemix').label_issue_score.source == catalogue.CLEAN_PROBABILITY
  with pytest.raises(ValueError, match='not one of'):
    LabelIssueScore('loss')
  with pytest.raises(ValueError, match='key and visits'):
    LabelIssueScore(catalogue.META_MARGIN)


def test_mlc_variants_have_their_own_labels(tmp_path):
  assert catalogue.label({'method': 'famus', 'famus': {'base': 'mlc'}}) == 'famus(mlc)'
  assert catalogue.label({'method': 'famus', 'famus': {'base': 'mlc'},
                          'meta': {'actual_step': 'reuse'}}) == 'famus(mlc)[reuse]'
  assert catalogue.label({'method': 'mlc', 'meta': {'actual_step': 'reuse'}}) == 'mlc[reuse]'
  assert catalogue.label({'method': 'mlc', 'meta': {'actual_step': 'recompute'}}) == 'mlc'
  runs = str(tmp_path / 'runs')
  cases = {'famus_mwnet': {'method': 'famus', 'famus': {'base': 'mwnet'}},
           'famus_mlc': {'method': 'famus', 'famus': {'base': 'mlc'}},
           'mlc': {'method': 'mlc', 'meta': {'actual_step': 'recompute'}},
           'mlc_reuse': {'method': 'mlc', 'meta': {'actual_step': 'reuse'}}}
  for k, (name, config) in enumerate(cases.items()):
    for seed in (0, 1):
      write_run(runs, f'{name}_s{seed}', {**config, 'seed': seed}, 0.5 + 0.1 * k, 0.4 + 0.1 * k)
  result = report.make_report([runs], str(tmp_path / 'out'))
  (methods,) = result['accuracy'].values()
  assert list(methods) == ['mlc', 'mlc[reuse]', 'famus', 'famus(mlc)']
  for label, k in (('famus', 0), ('famus(mlc)', 1), ('mlc', 2), ('mlc[reuse]', 3)):
    assert methods[label]['seeds'] == [0, 1]  # never averaged with another variant
    assert methods[label]['last_mean_std'][0] == pytest.approx(100 * (0.4 + 0.1 * k))


def test_labels_of_the_other_variants():
  cases = {'famus(l2r)': {'method': 'famus', 'famus': {'base': 'l2r'}},
           # L2R has one actual step and no meta model to amortise: neither tags it.
           'famus(l2r)[pseudo_clean]': {'method': 'famus', 'famus': {'base': 'l2r'},
                                        'meta': {'actual_step': 'reuse', 'update_every': 1},
                                        'meta_set': 'pseudo_clean'},
           'famus(mlc)[reuse,every5]': {'method': 'famus', 'famus': {'base': 'mlc'},
                                        'meta': {'actual_step': 'reuse', 'update_every': 5}},
           'famus[all]': {'method': 'famus', 'famus': {'strategy': 'all'}},
           'mwnet[reuse]': {'method': 'mwnet', 'meta': {'actual_step': 'reuse'}},
           'fsr[one_pass]': {'method': 'fsr', 'fsr': {'mixup_form': 'one_pass'}},
           'mwnet[pseudo_clean]': {'method': 'mwnet', 'meta_set': 'pseudo_clean'},
           'famus[pseudo_clean,semi]': {'method': 'famus', 'meta_set': 'pseudo_clean',
                                        'cotrain': {'semi_supervised': True}},
           'dividemix': {'method': 'dividemix', 'meta_set': 'pseudo_clean'},
           'mwnet': {'method': 'mwnet', 'cotrain': {'semi_supervised': True}},
           'random_weight': {'method': 'random_weight'}}
  for label, config in cases.items():
    assert catalogue.label(config) == label


def test_every_factory_resolves_where_its_module_exists():
  resolved = 0
  for name, entry in catalogue.CATALOGUE.items():
    module, attribute = entry.factory_path
    assert module.startswith('famus_jax.') and attribute, name
    # The registry imports the factory: it must sit below the registry (no tool, no CLI).
    assert not module.startswith(('famus_jax.tools', 'famus_jax.cli', 'famus_jax.config')), name
    if importlib.util.find_spec(module) is None:
      continue
    assert callable(getattr(importlib.import_module(module), attribute)), name
    assert method_registry.resolve_factory(name) is getattr(importlib.import_module(module),
                                                            attribute)
    resolved += 1
  assert resolved >= len(catalogue.CATALOGUE) - 1


def test_registry_benchmark_and_peer_read_the_catalogue():
  assert tuple(method_registry.METHODS) == catalogue.names()
  assert method_registry.PSEUDO_CLEAN_METHODS == ('mwnet', 'l2r', 'famus')
  variants = [v.name for e in catalogue.CATALOGUE.values() for v in e.benchmarks]
  assert len(variants) == len(set(variants)) == len(benchmark.method_specs())
  for name, (entry, variant) in catalogue.benchmark_variants().items():
    assert variant.overrides['method'] == entry.name, name
    assert variant.static_layers_from in (None, *variants), name
  assert benchmark.peer_method('famus_mlc') is None and benchmark.peer_method('mlc') is None
  assert benchmark.peer_method('fsr_onepass') == 'fsr'
  for entry in catalogue.CATALOGUE.values():
    assert set(entry.events) <= set(catalogue.EVENTS), entry.name
  torch_peer = pytest.importorskip('famus_jax.tools.torch_peer')
  assert set(torch_peer.METHODS) == set(torch_peer.STEPS) == set(catalogue.peer_methods())
