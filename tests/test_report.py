"""famus_jax.tools.report: figures and report.md from small synthetic run directories.

No training: each fake workdir holds hand-written config.json, metrics.jsonl
and (when finished) summary.json in the trainer's format; plus a quality
workdir and a benchmark JSON. The numbers in the report, the memorisation
grid's table included, are checked against an independent numpy aggregation
of the fake numbers.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from famus_jax import catalogue
from famus_jax.tools import report
from famus_jax.tools.report import grid, plots, series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 100
LAYERS = ['stem_conv', 'stem_bn', 'stage3_conv1', 'stage3_bn1', 'stage3_conv2', 'head']
CANDIDATES = ['stage3_conv1', 'stage3_bn1', 'stage3_conv2']
FAMUS_COUNTS = [30, 72, 100]  # cumulative active steps at the last train event (step 100)
FSR_WARMUP = 30  # FSR's weights are all 1 before this step
DIVISION = {'a': (0.80, 0.90), 'b': (0.85, 0.88)}  # member: precision, recall at step 0
SCHEDULE = ' (ResNet-8, 1000 imgs, 10 ep)'  # model and run length, part of a setting
SCHEDULE_SLUG = '_ResNet_8_1000_imgs_10_ep'
# (setting, method, seed) -> (best, last) test accuracy as fractions
ACCURACY = {
    ('symmetric', 'erm', 0): (0.612, 0.583),
    ('symmetric', 'mwnet', 0): (0.713, 0.701),
    ('symmetric', 'mwnet', 1): (0.689, 0.675),
    ('symmetric', 'famus', 0): (0.724, 0.719),
    ('symmetric', 'fsr', 0): (0.702, 0.690),
    ('symmetric', 'dividemix', 0): (0.731, 0.722),
    ('asymmetric', 'erm', 0): (0.655, 0.641),
    ('asymmetric', 'mwnet', 0): (0.699, 0.690),
}


def _write(path, value):
  with open(path, 'w') as f:
    json.dump(value, f)


def fit_scores(method, step):
  """The training-fit keys of an eval event: ERM memorises more as it trains."""
  noisy = (0.9 if method == 'erm' else 0.2) * step / STEPS
  return {'train_fit': 0.6 + 0.3 * noisy, 'train_fit_clean': 0.95, 'train_fit_noisy': noisy,
          'train_true_noisy': 0.9 - noisy}


def make_run(root, method, seed, noise_type, best, last, finished=True):
  """A fake workdir of STEPS steps: train every 10, eval at 50 and 100, weights every 10."""
  name = f'{noise_type[:4]}_{method}_s{seed}'
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  rng = np.random.default_rng([seed, len(method)])
  config = {'method': method, 'seed': seed, 'dataset': 'fashion_mnist', 'noise_type': noise_type,
            'noise_rate': 0.4, 'imbalance_factor': 1.0, 'model': 'resnet', 'depth': 8,
            'famus': {'base': 'mwnet', 'strategy': 'learned'}, 'train_subset': 1000,
            'meta': {'actual_step': 'recompute'},  # the papers' update (exact MW-Net)
            'num_epochs': 10, 'batch_size': 100}
  _write(os.path.join(workdir, 'config.json'), config)
  events = [{'event': 'data', 'step': 0, 'realised_noise_rate': 0.38},
            {'event': 'method', 'step': 0, 'method': method}]
  if method == 'famus':
    events[-1].update({'famus_layers': LAYERS, 'famus_candidates': CANDIDATES,
                       'famus_always_on': ['head'], 'famus_strategy': 'learned'})
  for step in range(0, STEPS, 10):
    weights = rng.gamma(2.0, 0.5, 20)
    if method in ('erm', 'dividemix') or (method == 'fsr' and step < FSR_WARMUP):
      weights = np.ones(20)
    events.append({'event': 'weights', 'step': step, 'epoch': step / 10,
                   'weights': list(weights / weights.mean()),
                   'noisy': [int(i % 5 < 2) for i in range(20)]})
    train = {'event': 'train', 'step': step + 10, 'epoch': (step + 10) / 10,
             'train_loss': 1.0, 'train_accuracy': 0.5, 'lr': 0.1}
    if method == 'famus':
      frac = (step + 10) / STEPS
      train['famus_active_counts'] = [round(c * frac) for c in FAMUS_COUNTS]
      train['famus_num_active'] = 3.0
    if method == 'fsr':
      train['fsr_dict_purity'] = 0.6 + 0.003 * step
      train['fsr_reweighting'] = float(step + 10 > FSR_WARMUP)
    events.append(train)
    if method == 'dividemix':
      events.append({'event': 'division', 'step': step + 10, 'epoch': (step + 10) // 10,
                     **{f'{m}_precision': DIVISION[m][0] + 0.001 * step for m in 'ab'},
                     **{f'{m}_recall': DIVISION[m][1] - 0.001 * step for m in 'ab'}})
    if (step + 10) % 50 == 0:
      acc = best if step + 10 == 50 else last
      events.append({'event': 'eval', 'step': step + 10, 'test_accuracy': acc,
                     'test_loss': 1.0, 'train_time_s': 0.1 * (step + 10) * (1 + seed),
                     **(fit_scores(method, step + 10) if finished else {})})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(e) + '\n' for e in events)
  if finished:
    _write(os.path.join(workdir, 'summary.json'), {
        'method': method, 'dataset': 'fashion_mnist', 'model': 'resnet', 'steps': STEPS,
        'epochs': 10.0, 'best_test_accuracy': best, 'last_test_accuracy': last,
        'last_test_loss': 1.0, 'mean_step_time_s': 0.1, 'compile_time_s': 2.0,
        'wall_time_s': 120.0 * (1 + seed), 'realised_noise_rate': 0.38, 'num_train': 1000,
        'num_meta': 100, 'mean_weight_clean': None if method == 'erm' else 1.2,
        'mean_weight_noisy': None if method == 'erm' else 0.7})
  return workdir


def make_quality(root):
  workdir = os.path.join(root, 'quality_famus')
  os.makedirs(workdir)
  _write(os.path.join(workdir, 'config.json'),
         {'method': 'famus', 'seed': 0, 'dataset': 'fashion_mnist', 'noise_type': 'symmetric',
          'noise_rate': 0.4, 'imbalance_factor': 1.0, 'famus': {'base': 'mwnet'}})
  with open(os.path.join(workdir, 'quality.jsonl'), 'w') as f:
    for step in (0, 20, 40):
      for k, est in enumerate(report.ESTIMATOR_ORDER):
        f.write(json.dumps({'step': step, 'estimator': est, 'num_layers': k + 1,
                            'cosine': 0.9 - 0.2 * k, 'rel_err': 0.3 + 0.2 * k,
                            'norm_ratio': 1.0, 'eps_cosine': 0.9, 'eps_rel_err': 0.3,
                            'estimate_norm': 1.0, 'exact_norm': 1.1}) + '\n')
  _write(os.path.join(workdir, 'quality_summary.json'), {
      'learned': {'cosine_mean': 0.9, 'cosine_std': 0.01, 'rel_err_mean': 0.3,
                  'rel_err_std': 0.02, 'norm_ratio_mean': 0.98, 'eps_cosine_mean': 0.95,
                  'estimate_norm_cv': 0.1, 'mean_layers': 1.0},
      'random': {'cosine_mean': 0.7, 'cosine_std': 0.05, 'rel_err_mean': 0.5,
                 'rel_err_std': 0.04, 'norm_ratio_mean': 0.9, 'eps_cosine_mean': 0.8,
                 'estimate_norm_cv': 0.2, 'mean_layers': 2.0, 'draw_variance': 0.0123},
      'exact': {'norm_cv': 0.05}, 'checks': 3, 'layers': LAYERS})
  return workdir


def make_benchmark(root):
  methods = {}
  for name, t in (('erm', 0.1), ('mwnet', 0.3), ('famus', 0.2)):
    methods[name] = {'step_time_s': t, 'ratio_to_erm': t / 0.1, 'ratio_to_mwnet': t / 0.3,
                     'cpu_time_s': t, 'compile_time_s': 5.0, 'reruns': 0,
                     'xla_step_bytes': 2**20 * t * 100, 'xla_step_ratio_to_erm': t / 0.1}
  path = os.path.join(root, 'bench.json')
  _write(path, {'device': 'cpu', 'jax': '0.0', 'model': 'resnet32', 'batch_size': 100,
                'timed_steps_per_method': 10, 'methods': methods})
  return path


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('runs'))
  grid = os.path.join(root, 'grid')
  for (noise, method, seed), (best, last) in ACCURACY.items():
    make_run(grid, method, seed, noise, best, last)
  unfinished = make_run(root, 'l2r', 0, 'asymmetric', 0.5, 0.45, finished=False)
  out = os.path.join(root, 'out')
  result = report.make_report([grid, unfinished, make_quality(root), make_benchmark(root)], out)
  with open(result['report']) as f:
    text = f.read()
  return root, out, result, text


EXPECTED_PNGS = ['accuracy_vs_time.png', 'memorisation.png',
                 'weights_fashion_mnist_sym_40' + SCHEDULE_SLUG + '.png',
                 'weights_fashion_mnist_asym_40' + SCHEDULE_SLUG + '.png',
                 'famus_sampled_layers.png',
                 'fsr_purity.png', 'pseudo_clean_division.png', 'meta_gradient_quality.png',
                 'benchmark_ratios.png']


def test_every_figure_is_a_real_png_linked_from_the_report(built):
  _, out, result, text = built
  assert sorted(os.path.basename(p) for p in result['figures']) == sorted(EXPECTED_PNGS)
  for name in EXPECTED_PNGS:
    path = os.path.join(out, name)
    assert os.path.getsize(path) > 5000, name
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and 200 < pixels.shape[1] <= 12 * 120
    assert pixels.std() > 0.01, name  # not blank
    assert f']({name})' in text
  assert result['skipped'] == {}


def test_accuracy_matches_numpy(built):
  _, _, result, text = built
  acc = result['accuracy']
  assert set(acc) == {'fashion_mnist sym 40%' + SCHEDULE, 'fashion_mnist asym 40%' + SCHEDULE}
  mwnet = acc['fashion_mnist sym 40%' + SCHEDULE]['mwnet']
  assert mwnet['seeds'] == [0, 1]
  for key, index in (('best', 0), ('last', 1)):
    values = 100 * np.array([ACCURACY[('symmetric', 'mwnet', s)][index] for s in (0, 1)])
    mean, std = mwnet[f'{key}_mean_std']
    np.testing.assert_allclose([mean, std], [values.mean(), values.std(ddof=1)])
    assert f'{values.mean():.2f} ± {values.std(ddof=1):.2f}' in text
  erm = acc['fashion_mnist sym 40%' + SCHEDULE]['erm']
  assert erm['best_mean_std'] == (pytest.approx(61.2), None)  # one seed: no std
  assert mwnet['wall_time_min'] == pytest.approx(np.mean([120.0, 240.0]) / 60)
  assert mwnet['median_step_s'] == pytest.approx(np.mean([0.1, 0.2]))  # 0.1 (1 + seed) a step
  # pivot: 'last (best)'
  assert f'| {100 * 0.583:.2f} ({100 * 0.612:.2f}) |' in text


def test_unfinished_run_is_flagged(built):
  _, _, result, text = built
  l2r = result['accuracy']['fashion_mnist asym 40%' + SCHEDULE]['l2r']
  assert l2r['all_unfinished'] and l2r['unfinished_seeds'] == [0]
  assert l2r['best_mean_std'][0] == pytest.approx(50.0)  # from its eval events
  assert '| l2r (unfinished) | 1 (s0 unfinished) |' in text


def test_sampled_layer_fractions_are_counts_over_step(built):
  _, _, result, _ = built
  fractions = result['sampled_layers']['symm_famus_s0']
  expected = {n: c / STEPS for n, c in zip(CANDIDATES, FAMUS_COUNTS)}
  expected['head'] = 1.0
  assert list(fractions) == ['stage3_conv1', 'stage3_bn1', 'stage3_conv2', 'head']
  assert fractions == pytest.approx(expected)


@pytest.mark.parametrize('base,update_every,updates', [
    ('mwnet', 5, 20), ('mwnet', 3, 34), ('mwnet', None, 20), ('mlc', None, 100),
    ('l2r', 5, 100)])
def test_sampled_layer_fractions_are_over_meta_updates(base, update_every, updates):
  """Under a meta-update period k FaMUS estimates on steps 0, k, 2k, ...: ceil(100 / k) of 100
  steps (the unset period: its base's, 5 for MW-Net, 1 for MLC; L2R has no meta model)."""
  config = report.with_schema_defaults({'method': 'famus', 'famus': {'base': base},
                                        'meta': {'update_every': update_every}})
  events = [{'event': 'method', 'step': 0, 'method': 'famus', 'famus_layers': ['a', 'b'],
             'famus_candidates': ['a', 'b'], 'famus_always_on': []},
            {'event': 'train', 'step': 100, 'famus_active_counts': [10.0, 4.0]}]
  run = report.RunDir(workdir='w', config=config, summary=None, events=events, quality=[],
                      quality_summary=None)
  assert series.sampled_layers(run)['fraction'] == pytest.approx([10 / updates, 4 / updates])


def test_legend_below_fits_the_figure_width():
  """Long labels wrap into columns no wider than the figure; the figure grows by the legend,
  and the legend (drawn) lies inside it, under the axes."""
  plt = plots.matplotlib_modules()[0]
  fig, ax = plt.subplots(figsize=(4.2, 3.0))
  labels = [f'famus[reuse,every5,scaled_lr,exact_meta_lr_scale=None] s{k}, a long setting name'
            for k in range(6)]
  handles = [ax.plot([0, 1], [k, k])[0] for k in range(6)]
  rect = plots._legend_below(fig, handles, labels, ncol=6)
  fig.tight_layout(rect=rect)
  assert fig.get_figheight() > 3.0 and 0 < rect[1] < 1
  fig.canvas.draw()
  box = fig.legends[0].get_window_extent()
  assert 0 <= box.x0 and box.x1 <= fig.bbox.width and 0 <= box.y0
  assert box.y1 <= ax.get_window_extent().y0  # under the axes, not over them
  plt.close(fig)


def test_weight_split_skips_warm_up_and_erm(built):
  _, _, result, _ = built
  split = result['weight_steps']['fashion_mnist sym 40%' + SCHEDULE]
  assert set(split) == {'mwnet', 'famus', 'fsr'}  # ERM's weights are all 1
  # FSR: re-weighting from step 30; early = the first 20% of steps 30..100.
  assert split['fsr']['early'] == {'symm_fsr_s0': [30, 40]}
  assert split['fsr']['late'] == {'symm_fsr_s0': [80, 90]}
  assert split['mwnet']['early'] == {'symm_mwnet_s0': [0, 10, 20], 'symm_mwnet_s1': [0, 10, 20]}


def test_quality_and_benchmark_tables(built):
  _, _, _, text = built
  assert '| learned | 1.0 | 0.900 ± 0.010 | 0.950 | 0.300 ± 0.020 | 0.980 | 0.100 | - |' in text
  assert '| random | 2.0 | 0.700 ± 0.050 | 0.800 | 0.500 ± 0.040 | 0.900 | 0.200 | 0.0123 |' in text
  assert '**resnet32, batch 100, cpu, JAX 0.0, median of 10 steps**' in text
  assert '| mwnet | - | 0.300 | 3.00 | 1.00 |' in text  # no actual-step record in the file


def test_division_curves_are_the_logged_divisions(built):
  run = report.load_run(os.path.join(built[0], 'grid', 'symm_dividemix_s0'))
  curves = report.division_curves(run)
  assert sorted(curves) == ['a', 'b']
  for member, (precision, recall) in DIVISION.items():
    epochs, got_p, got_r = curves[member]
    steps = np.arange(0, STEPS, 10)
    np.testing.assert_array_equal(epochs, (steps + 10) // 10)
    np.testing.assert_allclose(got_p, 100 * (precision + 0.001 * steps))
    np.testing.assert_allclose(got_r, 100 * (recall - 0.001 * steps))
  assert report.division_curves(report.load_run(os.path.join(built[0], 'grid',
                                                             'symm_mwnet_s0'))) == {}
  label = report.method_label({'method': 'famus', 'meta_set': 'pseudo_clean',
                               'cotrain': {'semi_supervised': True}})
  assert label == 'famus[pseudo_clean,semi]'
  assert report.method_label({'method': 'dividemix', 'meta_set': 'pseudo_clean'}) == 'dividemix'


def test_no_fsr_run_skips_purity_plot(built, tmp_path):
  root = built[0]
  out = str(tmp_path / 'out')
  result = report.make_report([os.path.join(root, 'grid', 'asym_erm_s0'),
                               os.path.join(root, 'grid', 'asym_mwnet_s0')], out)
  assert not os.path.exists(os.path.join(out, 'fsr_purity.png'))
  assert 'fsr_purity.png' in result['skipped']
  assert 'famus_sampled_layers.png' in result['skipped']
  assert os.path.exists(os.path.join(out, 'accuracy_vs_time.png'))


@pytest.mark.parametrize('kind', ['missing', 'empty_dir', 'not_benchmark'])
def test_bad_path_names_the_path(tmp_path, kind):
  path = tmp_path / 'bad'
  if kind == 'empty_dir':
    path.mkdir()
  elif kind == 'not_benchmark':
    path = tmp_path / 'bad.json'
    path.write_text('{"a": 1}')
  with pytest.raises(SystemExit) as info:
    report.make_report([str(path)], str(tmp_path / 'out'))
  assert str(path) in str(info.value)


def test_command_takes_paths_and_out_in_any_order(built, tmp_path):
  root = built[0]
  runs = [os.path.join(root, 'grid', 'asym_erm_s0'), os.path.join(root, 'grid', 'asym_mwnet_s0')]
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, '-m', 'famus_jax.tools.report', runs[0], f'--out={out}',
                         runs[1]], capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'wrote {out / "report.md"}' in proc.stdout
  assert 'erm' in (out / 'report.md').read_text()
  proc = subprocess.run([sys.executable, '-m', 'famus_jax.tools.report', f'--out={out}'],
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode != 0 and 'give at least one PATH' in proc.stderr


def test_median_window_step_ignores_a_paused_window():
  class Evals:
    def __init__(self, steps, times):
      self.events = [{'step': s, 'train_time_s': t} for s, t in zip(steps, times)]

    def of(self, name):
      assert name == 'eval'
      return self.events

  # Windows of 80 steps at 1.0 s / step, one holding a 2000 s pause, one at 1.5 s / step;
  # the first eval (40 s of compile) opens no window.
  run = Evals([80, 160, 240, 320, 400, 480], [120, 200, 2280, 2360, 2480, 2560])
  assert report.median_window_step(run) == pytest.approx(1.0)  # windows 1, 26, 1, 1.5, 1
  assert report.median_window_step(Evals([80], [120])) is None


def test_weight_shape_by_hand():
  """Zero fraction and effective batch (sum w)^2 / (n sum w^2), second half of the run only."""
  events = [{'event': 'weights', 'step': 0, 'weights': [1.0, 1.0, 1.0, 1.0], 'noisy': [0] * 4},
            {'event': 'weights', 'step': 10, 'weights': [2.0, 0.0, 2.0, 0.0], 'noisy': [0] * 4},
            {'event': 'weights', 'step': 20, 'weights': [4.0, 0.0, 0.0, 0.0], 'noisy': [0] * 4}]
  run = report.RunDir(workdir='w', config={}, summary=None, events=events, quality=[],
                      quality_summary=None)
  shape = report.weight_shape([run])
  assert shape['zero_weight_fraction'] == pytest.approx((0.5 + 0.75) / 2)
  assert shape['effective_batch_fraction'] == pytest.approx((16 / 32 + 16 / 64) / 2)
  assert report.method_label({'method': 'mwnet', 'meta': {'actual_step': 'reuse'}}) == \
      'mwnet[reuse]'
  assert report.method_label({'method': 'fsr', 'fsr': {'mixup_form': 'one_pass'}}) == \
      'fsr[one_pass]'


def test_ablation_runs_get_their_own_label():
  """A field that varies among one method's runs tags the runs off its reference value."""
  def run(name, seed, **fsr):
    config = report.with_schema_defaults({'method': 'fsr', 'seed': seed, 'fsr': fsr})
    return report.RunDir(workdir=name, config=config, summary=None, events=[], quality=[],
                         quality_summary=None)
  runs = [run('a', 0), run('b', 1), run('c', 0, relabel_momentum=0.5),
          run('d', 0, mixup_form='one_pass'), run('e', 0, mixup_alpha=0.0, relabel=False)]
  report.tag_variants(runs)
  assert [r.method for r in runs] == [
      'fsr', 'fsr', 'fsr[relabel_momentum=0.5]', 'fsr[one_pass]',
      'fsr[mixup_alpha=0.0,relabel=False]']
  erm = [report.RunDir(workdir='x', config=report.with_schema_defaults({'method': 'erm'}),
                       summary=None, events=[], quality=[], quality_summary=None)]
  report.tag_variants(erm)
  assert erm[0].method == 'erm'


def test_a_field_without_effect_on_a_run_does_not_tag_it():
  """FaMUS's warm-up rate tags only runs with a warm-up, its meta learning rate only runs with
  a meta model (not FaMUS on L2R); where it acts it still tags."""
  def run(name, **famus):
    config = report.with_schema_defaults({'method': 'famus', 'famus': famus,
                                          'meta': {'actual_step': 'reuse'}})
    return report.RunDir(workdir=name, config=config, summary=None, events=[], quality=[],
                         quality_summary=None)
  runs = [run('warm', exact_steps=250, exact_meta_lr_scale=1.0),
          run('warm_own_rate', exact_steps=250, exact_meta_lr_scale=None),
          run('cold', exact_steps=0, exact_meta_lr_scale=None),
          run('cold_3x', exact_steps=0, exact_meta_lr_scale=None, meta_lr_scale=3.0),
          run('l2r_3x', base='l2r', exact_steps=0, meta_lr_scale=3.0),
          run('l2r', base='l2r', exact_steps=0)]
  report.tag_variants(runs)
  assert [r.method for r in runs] == [
      'famus[reuse]', 'famus[reuse,exact_meta_lr_scale=None]', 'famus[reuse,exact_steps=0]',
      'famus[reuse,exact_steps=0,meta_lr_scale=3.0]', 'famus(l2r)[exact_steps=0]',
      'famus(l2r)[exact_steps=0]']


def test_amortised_runs_name_a_scaled_meta_learning_rate():
  """meta.amortised_lr='scaled' tags amortised runs only; a record older than the field reads
  as the default 'same' (what amortised runs did before it existed)."""
  def run(name, **meta):
    config = report.with_schema_defaults({'method': 'mwnet',
                                          'meta': {'actual_step': 'reuse', **meta}})
    return report.RunDir(workdir=name, config=config, summary=None, events=[], quality=[],
                         quality_summary=None)
  runs = [run('old', update_every=5), run('new', update_every=5, amortised_lr='scaled'),
          run('old_k1', update_every=1), run('new_k1', update_every=1, amortised_lr='scaled')]
  assert runs[0].config['meta']['amortised_lr'] == 'same'
  report.tag_variants(runs)
  assert [r.method for r in runs] == [
      'mwnet[reuse,every5]', 'mwnet[reuse,every5,scaled_lr]', 'mwnet[reuse]', 'mwnet[reuse]']


# The memorisation grid: three seeds of erm, mwnet and famus; (best, last, memorised share,
# wall time) per run, with ERM memorising and collapsing as the regime needs.
GRID = {
    'erm': [(0.718, 0.470, 0.92, 600.0), (0.705, 0.491, 0.88, 620.0), (0.722, 0.455, 0.95, 580.0)],
    'mwnet': [(0.794, 0.765, 0.21, 1500.0), (0.781, 0.770, 0.18, 1560.0),
              (0.799, 0.748, 0.25, 1490.0)],
    'famus': [(0.790, 0.760, 0.22, 900.0), (0.788, 0.772, 0.20, 950.0),
              (0.801, 0.741, 0.27, 910.0)],
}
GRID_STEP_S = {'erm': 0.18, 'mwnet': 0.5, 'famus': 0.3, 'l2r': 0.45}


def make_grid_run(root, method, seed, best, last, memorised, wall, fit_keys=True, cpu=None,
                  actual_step='recompute', step_s=None):
  """A finished run of 100 steps: evals at 50 (best) and 100 (last) with the fit keys.

  cpu: the host CPU its summary's provenance records (None: an older record without one).
  step_s: its step time (None: GRID_STEP_S of its method).
  """
  step_s = GRID_STEP_S[method] if step_s is None else step_s
  name = method if actual_step == 'recompute' else f'{method}_{actual_step}'
  workdir = os.path.join(root, f'{name}_s{seed}')
  os.makedirs(workdir)
  _write(os.path.join(workdir, 'config.json'), {
      'method': method, 'seed': seed, 'dataset': 'fashion_mnist', 'noise_type': 'symmetric',
      'noise_rate': 0.6, 'model': 'resnet', 'depth': 8, 'train_subset': 5000,
      'num_epochs': 40, 'meta': {'actual_step': actual_step}})
  events = [{'event': 'train', 'step': 50, 'epoch': 20.0, 'train_loss': 1.0}]
  for step, acc in ((50, best), (100, last)):
    fit = {'train_fit': 0.4 + 0.6 * memorised, 'train_fit_clean': 0.97,
           'train_fit_noisy': memorised * step / 100, 'train_true_noisy': 1 - memorised}
    events.append({'event': 'eval', 'step': step, 'test_accuracy': acc, 'test_loss': 1.0,
                   'train_time_s': 10.0 + step_s * step,
                   **(fit if fit_keys else {})})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(e) + '\n' for e in events)
  _write(os.path.join(workdir, 'summary.json'), {
      'steps': 100, 'epochs': 40.0, 'best_test_accuracy': best, 'last_test_accuracy': last,
      'wall_time_s': wall, 'mean_step_time_s': step_s,
      'mean_weight_clean': None if method == 'erm' else 1.3 + 0.01 * seed,
      'mean_weight_noisy': None if method == 'erm' else 0.4,
      **({} if cpu is None else {'provenance': {'cpu': cpu}})})


def test_grid_marks_ratios_of_runs_from_different_machines(tmp_path):
  root = str(tmp_path / 'grid')
  machines = {'erm': ['A x2'] * 3, 'mwnet': ['A x2', None, 'A x2'], 'famus': ['A x2', 'B x2', 'B x2']}
  for method, runs in GRID.items():
    for seed, values in enumerate(runs):
      make_grid_run(root, method, seed, *values, cpu=machines[method][seed])
  result = report.make_report([root], str(tmp_path / 'out'))
  rows = result['grid']['fashion_mnist sym 60% (ResNet-8, 5000 imgs, 40 ep)']
  assert {m: r['mixed_machines'] for m, r in rows.items()} == {
      'erm': False, 'mwnet': False, 'famus': True}
  text = open(result['report']).read()
  famus_line = next(line for line in text.splitlines() if line.startswith('| famus | 3 |'))
  mwnet_line = next(line for line in text.splitlines() if line.startswith('| mwnet | 3 |'))
  assert famus_line.count('†') == 2 and '†' not in mwnet_line
  assert '† The runs of this row and ERM' in text


def test_grid_table_by_hand(tmp_path, capsys):
  root = str(tmp_path / 'grid')
  for method, runs in GRID.items():
    for seed, values in enumerate(runs):
      make_grid_run(root, method, seed, *values)
  old = str(tmp_path / 'old')  # an older run: no fit keys in its eval records
  make_grid_run(old, 'l2r', 0, 0.75, 0.70, 0.3, 1000.0, fit_keys=False)
  result = report.make_report([root, os.path.join(old, 'l2r_s0')], str(tmp_path / 'out'))
  printed = capsys.readouterr().out
  text = open(result['report']).read()
  setting = 'fashion_mnist sym 60% (ResNet-8, 5000 imgs, 40 ep)'
  rows = result['grid'][setting]
  assert list(rows) == ['erm', 'mwnet', 'l2r', 'famus']
  col = lambda method, k: 100 * np.array([r[k] for r in GRID[method]])
  for method in GRID:
    best, last = col(method, 0), col(method, 1)
    np.testing.assert_allclose(rows[method]['best_mean_std'], [best.mean(), best.std(ddof=1)])
    np.testing.assert_allclose(rows[method]['last_mean_std'], [last.mean(), last.std(ddof=1)])
    memorised = np.array([r[2] for r in GRID[method]])
    np.testing.assert_allclose(rows[method]['train_fit_noisy'],
                               [memorised.mean(), memorised.std(ddof=1)])
    np.testing.assert_allclose(rows[method]['wall_ratio'],
                               np.mean([r[3] for r in GRID[method]])
                               / np.mean([r[3] for r in GRID['erm']]))
    assert rows[method]['step_ratio'] == pytest.approx(
        GRID_STEP_S[method] / GRID_STEP_S['erm'])
    per_seed = ', '.join(f's{s} {b:.2f} / {l:.2f}' for s, (b, l) in enumerate(zip(best, last)))
    assert f'| {method} | 3 | {best.mean():.2f} ± {best.std(ddof=1):.2f} | ' \
           f'{last.mean():.2f} ± {last.std(ddof=1):.2f} | {per_seed} |' in text
  for method, reference, key in (('famus', 'erm', 'minus_erm'),
                                 ('famus', 'mwnet', 'minus_mwnet'), ('mwnet', 'erm', 'minus_erm')):
    diff = col(method, 1) - col(reference, 1)  # paired by seed
    got = rows[method][key]
    np.testing.assert_allclose(got[:2], [diff.mean(), diff.std(ddof=1)])
    assert got[2] == 3
    assert f'{diff.mean():+.2f} ± {diff.std(ddof=1):.2f}' in text
  assert rows['erm']['minus_erm'] == (None, None, 0)
  # The short table: the same numbers in the columns a results page quotes.
  erm_last = col('erm', 1)
  for method in ('mwnet', 'famus'):
    last = col(method, 1)
    memorised = 100 * np.mean([r[2] for r in GRID[method]])
    to_mwnet = ('-' if method == 'mwnet' else
                f'{(last - col("mwnet", 1)).mean():+.2f} ± {(last - col("mwnet", 1)).std(ddof=1):.2f}')
    per_seed = ', '.join(f's{s} {v:.2f}' for s, v in enumerate(last))
    assert (f'| {method} | 1000 | {per_seed} | {last.mean():.2f} ± {last.std(ddof=1):.2f} | '
            f'{(last - erm_last).mean():+.2f} ± {(last - erm_last).std(ddof=1):.2f} | '
            f'{to_mwnet} | {memorised:.1f} | '
            f'{GRID_STEP_S[method] / GRID_STEP_S["erm"]:.2f} |') in text
  assert f'| erm | none | s0 {erm_last[0]:.2f}, s1 {erm_last[1]:.2f}, s2 {erm_last[2]:.2f} | ' \
         f'{erm_last.mean():.2f} ± {erm_last.std(ddof=1):.2f} | - | ' in text
  # The older run: its fit columns are '-', its one seed pairs with seed 0 of ERM and MW-Net.
  assert rows['l2r']['train_fit_noisy'] == (None, None)
  assert rows['l2r']['minus_erm'][2] == 1
  l2r_line = next(line for line in text.splitlines() if line.startswith('| l2r | 1 |'))
  assert '| - | - | - | - |' in l2r_line
  assert 'numpy std with ddof=1' in text
  # ERM: fit 0.4 + 0.6 m at the end; best - last in points.
  fit = np.mean([0.4 + 0.6 * r[2] for r in GRID['erm']])
  drop = np.mean(col('erm', 0) - col('erm', 1))
  for where in (text, printed):
    assert f"PASS: ERM's final fit to the given (noisy) labels {fit:.3f}" in where
    assert f"PASS: ERM's best minus last top-1 {drop:.2f} points" in where
  assert 'memorisation.png' in [os.path.basename(p) for p in result['figures']]


def test_actual_step_table_pairs_each_reuse_row_with_its_recompute_row(tmp_path):
  root = str(tmp_path / 'grid')
  for method in ('erm', 'mwnet', 'famus'):
    for seed, values in enumerate(GRID[method]):
      make_grid_run(root, method, seed, *values)
  reuse = {'mwnet': [(0.80, 0.77, 0.2, 1000.0), (0.79, 0.74, 0.2, 1000.0)],  # seeds 0, 1
           'mlc': [(0.81, 0.80, 0.1, 1000.0)]}                                # no partner
  for method, runs in reuse.items():
    for seed, values in enumerate(runs):
      make_grid_run(root, method, seed, *values, actual_step='reuse', step_s=0.4)
  result = report.make_report([root], str(tmp_path / 'out'))
  rows = result['grid']['fashion_mnist sym 60% (ResNet-8, 5000 imgs, 40 ep)']
  assert {'mwnet[reuse]', 'mlc[reuse]'} <= set(rows)
  pairs = grid.actual_step_pairs(rows)
  assert list(pairs) == ['mwnet[reuse]']   # famus has no reuse row, mlc[reuse] no partner
  diff = 100 * (np.array([r[1] for r in reuse['mwnet']])
                - np.array([r[1] for r in GRID['mwnet'][:2]]))
  assert pairs['mwnet[reuse]']['partner'] == 'mwnet'
  np.testing.assert_allclose(pairs['mwnet[reuse]']['difference'][:2],
                             [diff.mean(), diff.std(ddof=1)])
  assert pairs['mwnet[reuse]']['difference'][2] == 2
  np.testing.assert_allclose(list(pairs['mwnet[reuse]']['per_seed'].values()), diff)
  recompute_sd = 100 * np.std([r[1] for r in GRID['mwnet']], ddof=1)
  within = ('within' if abs(diff.mean()) <= recompute_sd
            else 'above' if diff.mean() > 0 else 'below')
  text = open(result['report']).read()
  assert (f'| mwnet[reuse] | mwnet | ' in text and
          f'| {diff.mean():+.2f} ± {diff.std(ddof=1):.2f} | '
          f's0 {diff[0]:+.2f}, s1 {diff[1]:+.2f} | {within} | '
          f'{0.4 / GRID_STEP_S["mwnet"]:.2f} |' in text)
  assert report.labels.without_tag('famus(l2r)[reuse,every5]', 'reuse') == 'famus(l2r)[every5]'
  assert report.labels.without_tag('mlc[reuse]', 'reuse') == 'mlc'
  assert report.labels.without_tag('mlc[reused]', 'reuse') is None
  assert report.labels.without_tag('mlc', 'reuse') is None


def test_clean_images_count_the_clean_meta_set_a_method_reads():
  assert catalogue.clean_images({'method': 'mwnet', 'meta_set': 'clean', 'num_meta': 500}) == 500
  assert catalogue.clean_images({'method': 'famus', 'num_meta': 1000}) == 1000  # default: clean
  assert catalogue.clean_images({'method': 'famus', 'meta_set': 'pseudo_clean',
                                 'num_meta': 1000}) == 0
  for method in ('erm', 'fsr', 'dividemix', 'random_weight'):
    assert catalogue.clean_images({'method': method, 'num_meta': 1000}) == 0


def test_missing_matplotlib_is_one_line_naming_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # `import matplotlib` raises
  with pytest.raises(SystemExit, match=r"pip install 'famus_jax\[report\]'"):
    plots.matplotlib_modules()


def test_learning_signal_against_scikit_learn():
  """Weight AUROC per band pooled over the band's logged batches (scikit-learn's roc_auc_score
  of the negated weights), the band's mean meta-gradient norm and its ratio to MW-Net's."""
  from sklearn.metrics import roc_auc_score  # pylint: disable=import-outside-toplevel
  from famus_jax.tools.report import signal  # pylint: disable=import-outside-toplevel
  from famus_jax.tools.report.loading import RunDir  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  config = {'dataset': 'fashion_mnist', 'noise_type': 'symmetric', 'noise_rate': 0.6,
            'model': 'resnet', 'depth': 8, 'train_subset': 5000, 'num_epochs': 40}
  batches, runs = {}, []
  for method, scale in (('mwnet', 1.0), ('famus', 0.25)):
    events = []
    for step in range(0, 800, 10):  # bands: [0, 100), [100, 200), [200, 400), ...
      noisy = rng.random(20) < 0.5
      weights = np.round(rng.random(20) + 0.8 * ~noisy * (step / 800), 1)  # ties on purpose
      events.append({'event': 'weights', 'step': step, 'weights': list(weights),
                     'noisy': [int(v) for v in noisy]})
      events.append({'event': 'train', 'step': step + 5, 'meta_grad_norm': scale * (1 + step)})
      batches.setdefault(method, []).append((step, weights, noisy))
    runs.append(RunDir(f'/x/{method}_s0', {**config, 'method': method}, {'steps': 800}, events,
                       [], None))
  runs.append(RunDir('/x/erm_s0', {**config, 'method': 'erm'}, {'steps': 800},
                     [{'event': 'train', 'step': 5, 'train_loss': 1.0}], [], None))
  rows = next(iter(signal.signal_rows(runs).values()))
  assert list(rows) == ['mwnet', 'famus']  # ERM logs neither
  for method, scale in (('mwnet', 1.0), ('famus', 0.25)):
    for band, (lo, hi) in enumerate(signal.BANDS):
      inside = [(w, n) for s, w, n in batches[method] if lo * 800 <= s < hi * 800]
      w = np.concatenate([w for w, _ in inside])
      n = np.concatenate([n for _, n in inside])
      assert rows[method]['auroc'][band] == pytest.approx(roc_auc_score(n, -w))
      steps = [s + 5 for s, _, _ in batches[method] if lo * 800 <= s + 5 < hi * 800]
      assert rows[method]['meta_grad_norm'][band] == pytest.approx(
          np.mean([scale * (1 + s - 5) for s in steps]))
      assert rows[method]['norm_ratio'][band] == pytest.approx(scale)
  lines = signal.signal_section(runs)
  assert lines[0] == '## How fast the weights learned'
  assert any(line.startswith('| famus | 1 | ') and '| 0.25 |' in line for line in lines)


def test_kept_run_records_give_the_report_of_the_workdirs(tmp_path):
  """scripts/keep_run_records.sh: finished runs' records (no checkpoints) report as the runs."""
  root = str(tmp_path / 'grid')
  for method, runs in GRID.items():
    for seed, values in enumerate(runs):
      make_grid_run(root, method, seed, *values)
  os.makedirs(os.path.join(root, 'mwnet_s0', 'checkpoints', '10'))
  unfinished = make_run(root, 'famus', 9, 'symmetric', 0.5, 0.4, finished=False)
  kept = tmp_path / 'kept'
  subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'keep_run_records.sh'), root, str(kept)],
                 check=True, capture_output=True)
  assert sorted(os.listdir(kept)) == sorted(d for d in os.listdir(root)
                                            if d != os.path.basename(unfinished))
  assert sorted(os.listdir(kept / 'mwnet_s0')) == ['config.json', 'metrics.jsonl.gz',
                                                 'summary.json']
  os.remove(unfinished + '/metrics.jsonl')  # the workdirs' report without the unfinished run
  want = report.make_report([root], str(tmp_path / 'a'))['grid']
  assert want and report.make_report([str(kept)], str(tmp_path / 'b'))['grid'] == want


def test_a_grid_of_variants_gets_distinct_colours():
  """Fifteen labels beside the catalogue's methods, none sharing a colour with another."""
  labels = ['erm', 'mwnet', 'fsr'] + [f'mwnet[every{k}]' for k in range(15)]
  colours = report.method_colours(labels)
  assert len(set(colours.values())) == len(labels)


def test_memorisation_grid_rows_are_distinct_rows_of_the_table(tmp_path):
  """scripts/memorisation_grid.sh's default rows: each a valid config of the memorisation
  preset, and each its own row of the report's table, under the label the docs explain."""
  import ast  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  from famus_jax import config_check  # pylint: disable=import-outside-toplevel
  from famus_jax.presets import fashion_mnist_memorise  # pylint: disable=import-outside-toplevel
  scripts = tmp_path / 'scripts'
  scripts.mkdir()
  shutil.copy(os.path.join(ROOT, 'scripts', 'memorisation_grid.sh'), scripts)
  (scripts / 'accuracy_grid.sh').write_text('printf "%s\\n" $4\n')  # prints the VARIANTS
  variants = subprocess.run(['bash', str(scripts / 'memorisation_grid.sh'), 'runs'],
                            capture_output=True, text=True, check=True).stdout.split()
  runs = []
  for variant in variants:
    name, _, fields = variant.partition(':')
    config = fashion_mnist_memorise.get_config()
    config.method = name.split('_')[0]
    for pair in filter(None, fields.split(',')):
      key, value = pair.split('=')
      *groups, leaf = key.split('.')
      node = config
      for group in groups:
        node = node[group]
      try:
        node[leaf] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        node[leaf] = value
    config_check.validate(config)
    config = catalogue.with_update_period(config)  # what the trainer records
    runs.append(report.RunDir(workdir=name, config=report.with_schema_defaults(config.to_dict()),
                              summary=None, events=[], quality=[], quality_summary=None))
  report.tag_variants(runs)
  assert {r.workdir: r.method for r in runs} == {
      'erm': 'erm', 'mwnet': 'mwnet', 'mwnet_reuse': 'mwnet[reuse]',
      'mwnet_default': 'mwnet[reuse,every5,scaled_lr]', 'l2r': 'l2r',
      'random_weight': 'random_weight', 'mlc': 'mlc', 'mlc_default': 'mlc[reuse]',
      'famus_default': 'famus[reuse,every5,scaled_lr]',
      'famus_default_recompute': 'famus[every5,scaled_lr]',
      'famus_l2r': 'famus(l2r)[exact_steps=0]', 'fsr': 'fsr', 'fsr_onepass': 'fsr[one_pass]',
      'fsr_paper': 'fsr[mixup_losses=weighted]', 'dividemix': 'dividemix',
      'famus_pseudo': 'famus[reuse,pseudo_clean,exact_steps=0]',
      'mwnet_pseudo': 'mwnet[reuse,pseudo_clean]'}
