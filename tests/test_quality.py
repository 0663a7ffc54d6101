"""famus_jax.tools.quality: per-layer meta-gradient shares, estimator comparison, the run.

The per-layer shares must add up to the exact meta gradient computed
independently, by reverse-over-reverse autodiff through the virtual step.
Tiny synthetic config (small CNN with BatchNorm), one compiled probe.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from famus_jax.presets import tiny
from famus_jax.tools import quality
from famus_jax.data import build_data
from famus_jax.errors import ConfigError
from famus_jax.meta import meta_gradient as mg
from famus_jax.train.step import make_context_fn
from famus_jax.train.trainer import Run, data_mesh


def quality_config(**overrides):
  c = tiny.get_config()
  c.method = 'famus'
  c.famus.candidates = 'all'
  c.famus.target_active = 2.0
  c.famus.num_random = 2
  c.progress_bar = False
  c.quality.every = 2
  c.quality.random_draws = 3
  c.num_steps = 4
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.fixture(scope='module')
def probe_case():
  """(G, T, exact d_eps by reverse-over-reverse, exact theta gradient) on one batch."""
  config = quality_config()
  run = Run(config, build_data(config), data_mesh())
  state = run.init_state()
  names = list(run.method.estimator.cached_layer_sets.names)
  batch = run.batch(0)
  context = make_context_fn(run.model, True, run.lr_fn, config.augment, run.mean, run.std,
                            run.data.num_classes, config.meta_bn_train_mode)

  def reference(state, batch):
    ctx, _, _ = context(state, batch)
    base = run.method.base
    eps, pullback = base.coefficients(state.method_state['base'], ctx.losses)
    d_eps = mg.reference_coefficient_gradient(ctx.loss_vec_fn, ctx.val_loss_fn, ctx.params,
                                              eps, ctx.lr)
    return d_eps, ravel_pytree(pullback(d_eps))[0]

  g_eps, g_theta = jax.jit(quality.make_probe(run, names))(state, batch)
  ref_eps, ref_theta = jax.jit(reference)(state, batch)
  as64 = lambda a: np.asarray(a, np.float64)  # pylint: disable=g-long-lambda
  return names, as64(g_eps), as64(g_theta), as64(ref_eps), as64(ref_theta)


def test_layer_shares_sum_to_the_exact_meta_gradient(probe_case):
  names, g_eps, g_theta, ref_eps, ref_theta = probe_case
  assert g_eps.shape == (16, len(names)) and g_theta.shape[0] == len(names)
  np.testing.assert_allclose(g_eps.sum(1), ref_eps, rtol=2e-4, atol=1e-8)
  np.testing.assert_allclose(g_theta.sum(0), ref_theta, rtol=2e-4, atol=1e-8)
  # Every layer contributes something: the shares are not a copy of the total.
  assert np.all(np.linalg.norm(g_eps, axis=0) > 0)


def test_records_compare_layer_sets_with_the_exact_gradient(probe_case):
  names, g_eps, g_theta, _, _ = probe_case
  everything = np.ones(len(names))
  head = np.eye(len(names))[-1]
  records, spread = quality.check_records(
      7, g_eps, g_theta, {'learned': [everything], 'random': [head, head], 'block': [head],
                          'head': [head]})
  by_name = {r['estimator']: r for r in records}
  assert by_name['learned']['cosine'] == pytest.approx(1.0, abs=1e-9)
  assert by_name['learned']['rel_err'] == pytest.approx(0.0, abs=1e-9)
  exact, estimate = g_theta.sum(0), g_theta[-1]
  expected = estimate @ exact / (np.linalg.norm(estimate) * np.linalg.norm(exact))
  assert by_name['head']['cosine'] == pytest.approx(expected, rel=1e-9)
  assert by_name['head']['norm_ratio'] == pytest.approx(
      np.linalg.norm(estimate) / np.linalg.norm(exact), rel=1e-9)
  eps_est, eps_exact = g_eps[:, -1], g_eps.sum(1)
  assert by_name['head']['eps_rel_err'] == pytest.approx(
      np.linalg.norm(eps_est - eps_exact) / np.linalg.norm(eps_exact), rel=1e-9)
  assert spread == pytest.approx(0.0, abs=1e-12)  # identical draws: no variance
  assert all(r['step'] == 7 for r in records)


def test_layer_masks_follow_the_famus_settings():
  config = quality_config()
  run = Run(config, build_data(config), data_mesh())
  run.init_state()
  sets = run.method.estimator.cached_layer_sets
  names = list(sets.names)
  active = np.zeros(len(sets.candidates))
  active[[1, 3]] = 1
  masks = quality.layer_masks(names, sets, config.famus, active,
                              np.random.default_rng(0), draws=5)
  chosen = [n for n, m in zip(names, masks['learned'][0]) if m]
  assert chosen == [sets.candidates[1], sets.candidates[3]]
  assert len(masks['random']) == 5
  assert all(m.sum() == config.famus.num_random for m in masks['random'])
  assert [n for n, m in zip(names, masks['head'][0]) if m] == ['head']


def test_run_writes_checks_and_summary(tmp_path):
  summary = quality.run_quality(quality_config(), str(tmp_path))
  lines = [json.loads(x) for x in (tmp_path / 'quality.jsonl').read_text().splitlines()]
  assert sorted({r['step'] for r in lines}) == [0, 2]
  assert sorted({r['estimator'] for r in lines}) == sorted(quality.ESTIMATORS)
  assert summary['checks'] == 2
  for name in quality.ESTIMATORS:
    cos = [r['cosine'] for r in lines if r['estimator'] == name]
    assert summary[name]['cosine_mean'] == pytest.approx(np.mean(cos))
    assert -1.0 - 1e-6 <= summary[name]['cosine_mean'] <= 1.0 + 1e-6
  assert 'draw_variance' in summary['random']
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  saved = json.loads((tmp_path / 'quality_summary.json').read_text())
  assert saved['checks'] == 2


def test_quality_needs_famus_on_mwnet(tmp_path):
  with pytest.raises(ConfigError, match="config.method='famus'"):
    quality.run_quality(quality_config(method='mwnet'), str(tmp_path))
  config = quality_config()
  config.famus.base = 'l2r'
  with pytest.raises(ConfigError, match='famus.base'):
    quality.run_quality(config, str(tmp_path))
  config = quality_config()
  config.quality.every = 0
  with pytest.raises(ConfigError, match='quality.every'):
    quality.run_quality(config, str(tmp_path))
