"""Tests for famus_jax.models: shapes, parameter counts, layer helpers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from famus_jax import config as schema
from famus_jax import models
from famus_jax.errors import ConfigError

def key(seed: int):
  # 'rbg' keys: compiling model.init with threefry keys is ~3x slower on CPU.
  return jax.random.key(seed, impl='rbg')


def base_config(**overrides):
  c = schema.get_config()
  c.update(overrides)
  return c


def param_count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def abstract_variables(model, shape=(1, 32, 32, 3)):
  """Variables as ShapeDtypeStructs: nothing is allocated."""
  return jax.eval_shape(
      lambda: model.init(key(0), jnp.zeros(shape), train=False))


# ---- parameter counts (abstract) -------------------------------------------

@pytest.mark.parametrize('cfg, exact, reference', [
    (dict(model='resnet', depth=32), 464_154, 464_154),
    (dict(model='wide_resnet', depth=28, width=10), 36_479_194, 36_479_194),
    (dict(model='wide_resnet', depth=40, width=2), 2_243_546, 2.24e6),
    (dict(model='wide_resnet', depth=28, width=2), 1_467_610, 1.47e6),
    (dict(model='preact_resnet18'), 11_172_170, 11.17e6),
    (dict(model='small_cnn', width=8), 1_586, 1_586),
])
def test_parameter_counts(cfg, exact, reference):
  model = models.create_model(base_config(dropout=0.0, **cfg), num_classes=10)
  n = param_count(abstract_variables(model)['params'])
  assert n == exact
  assert abs(n - reference) / reference < 0.01


def test_resnet_shortcut_b_adds_projection_params():
  a = abstract_variables(models.ResNetCifar(10, depth=32, shortcut='A'))
  b = abstract_variables(models.ResNetCifar(10, depth=32, shortcut='B'))
  assert 'stage2_block1_shortcut_conv' not in a['params']
  assert b['params']['stage2_block1_shortcut_conv']['kernel'].shape == (
      1, 1, 16, 32)
  assert param_count(b['params']) - param_count(a['params']) == (
      16 * 32 + 2 * 32 + 32 * 64 + 2 * 64)


def test_head_is_top_level_dense():
  v = abstract_variables(models.WideResNet(7, depth=28, widen_factor=10))
  assert v['params']['head']['kernel'].shape == (640, 7)
  assert v['params']['head']['bias'].shape == (7,)


# ---- real forward passes ---------------------------------------------------

MODEL_SPECS = {
    # name: (config overrides, feature dim)
    'small_cnn': (dict(model='small_cnn', width=8), 16),
    'resnet14': (dict(model='resnet', depth=14), 64),
    'wrn16_2_dropout': (dict(model='wide_resnet', depth=16, width=2,
                             dropout=0.3), 128),
    'preact18': (dict(model='preact_resnet18'), 512),
}


@pytest.fixture(scope='module')
def x32():
  return jax.random.normal(key(1), (2, 32, 32, 3), jnp.float32)


@pytest.fixture(scope='module', params=sorted(MODEL_SPECS))
def built(request, x32):
  """(model, variables, feature_dim) initialised once per model."""
  overrides, dim = MODEL_SPECS[request.param]
  model = models.create_model(base_config(**{'dropout': 0.0, **overrides}),
                              num_classes=10)
  variables = jax.jit(lambda k: model.init(k, x32, train=False))(
      key(0))
  return model, variables, dim


@pytest.fixture(scope='module')
def outputs(built, x32):
  """Eval logits/features and one train-mode step, computed once per model."""
  model, variables, _ = built

  @jax.jit
  def run(variables, x):
    logits, feats = model.apply(variables, x, train=False,
                                return_features=True)
    plain = model.apply(variables, x, train=False)
    train = lambda seed: model.apply(
        variables, x, train=True, return_features=True,
        mutable=['batch_stats'], rngs={'dropout': key(seed)})
    (tr_logits, tr_feats), upd = train(3)
    (tr_logits2, _), _ = train(4)
    _, eval_upd = model.apply(variables, x, train=False,
                              mutable=['batch_stats'])
    return dict(logits=logits, feats=feats, plain=plain, tr_logits=tr_logits,
                tr_feats=tr_feats, tr_logits2=tr_logits2,
                stats=upd['batch_stats'],
                eval_stats=eval_upd['batch_stats'])

  return run(variables, x32)


def test_output_shapes_and_features(built, outputs):
  _, variables, dim = built
  assert outputs['logits'].shape == (2, 10)
  assert outputs['logits'].dtype == jnp.float32
  assert outputs['feats'].shape == (2, dim)
  np.testing.assert_allclose(outputs['plain'], outputs['logits'], rtol=1e-6)
  head = variables['params']['head']
  for feats, logits in ((outputs['feats'], outputs['logits']),
                        (outputs['tr_feats'], outputs['tr_logits'])):
    np.testing.assert_allclose(feats @ head['kernel'] + head['bias'], logits,
                               rtol=1e-4, atol=1e-5)
  assert np.all(np.isfinite(outputs['tr_logits']))


def test_dropout_only_in_wide_resnet_training(built, outputs):
  model = built[0]
  has_dropout = getattr(model, 'dropout', 0.0) > 0
  same = np.allclose(outputs['tr_logits'], outputs['tr_logits2'])
  assert same != has_dropout


def test_train_mutates_batch_stats_eval_does_not(built, outputs):
  _, variables, _ = built
  old = variables['batch_stats']
  assert jax.tree.structure(outputs['stats']) == jax.tree.structure(old)
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
      outputs['stats'], old))
  assert all(changed)
  jax.tree.map(np.testing.assert_array_equal, outputs['eval_stats'], old)


def test_layer_names_forward_order(built, x32):
  model, variables, _ = built
  params = variables['params']
  names = models.layer_names(params)
  assert names[0] == 'stem_conv' and names[-1] == 'head'
  assert sorted(names) == sorted(params)  # flat: a layer is a top-level key
  assert names == models.layer_names_in_call_order(model, variables, x32)
  assert names == models.layer_names_in_call_order(model, variables, x32,
                                                   train=True)
  # Independent of dict key order (jax.tree.map sorts keys).
  assert models.layer_names(dict(reversed(list(params.items())))) == names
  assert models.layer_names(jax.tree.map(jnp.zeros_like, params)) == names
  pos = {n: i for i, n in enumerate(names)}
  assert pos['stem_conv'] < pos['stage1_block1_conv1']
  if 'stage1_block1_conv2' in pos:
    assert pos['stage1_block1_conv1'] < pos['stage1_block1_conv2']
    assert pos['stage1_block2_conv1'] < pos['stage2_block1_conv1']
  if 'stage2_block1_shortcut_conv' in pos:  # projection after the main path
    assert pos['stage2_block1_conv2'] < pos['stage2_block1_shortcut_conv']


def test_layer_helpers_on_model(built):
  _, variables, _ = built
  params = variables['params']
  names = models.layer_names(params)
  parts = models.split_by_layers(params, names)
  assert list(parts) == names
  merged = models.merge_layers(parts)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  fake_grads = jax.tree.map(jnp.ones_like, params)
  for n in names:
    layer = parts[n]
    kind = models.layer_kind(layer)
    assert kind == ('dense' if n == 'head' else
                    'conv' if n.endswith('conv') or n[-5:-1] == 'conv' else
                    'norm')
    pooled = models.avg_pool_gradient(models.get_layer(fake_grads, n))
    assert pooled.shape == (models.layer_feature_size(layer),)
    np.testing.assert_allclose(pooled, 1.0)
  assert models.layer_feature_size(parts['head']) == 20


def test_dropout_rng_needed_only_when_training_with_dropout(x32):
  x = x32[:1]
  model = models.WideResNet(10, depth=10, widen_factor=1, dropout=0.5)
  variables = abstract_variables(model)
  train = lambda m, **kw: jax.eval_shape(lambda v: m.apply(
      v, x, train=True, mutable=['batch_stats'], **kw), variables)
  with pytest.raises(Exception, match='dropout'):
    train(model)
  train(model, rngs={'dropout': key(0)})
  jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  train(models.WideResNet(10, depth=10, widen_factor=1, dropout=0.0))


@pytest.mark.parametrize('cfg', [dict(model='small_cnn', width=4),
                                 dict(model='resnet', depth=8)])
def test_fashion_mnist_shaped_inputs(cfg):
  x = jnp.ones((2, 28, 28, 1), jnp.float32)
  model = models.create_model(base_config(dropout=0.0, **cfg), num_classes=10)
  init_and_train = jax.jit(lambda k: model.apply(
      model.init(k, x, train=False), x, train=True, mutable=['batch_stats']))
  logits, _ = init_and_train(key(0))
  assert logits.shape == (2, 10)
  assert np.all(np.isfinite(logits))


# ---- configuration errors --------------------------------------------------

@pytest.mark.parametrize('cfg, pattern', [
    (dict(model='resnet', depth=33), r'depth=33.*6n\+2'),
    (dict(model='resnet', depth=2), r'depth=2.*6n\+2'),
    (dict(model='wide_resnet', depth=27), r'depth=27.*6n\+4'),
    (dict(model='wide_resnet', width=0), r'width=0'),
    (dict(model='resnet', dropout=0.3), r'dropout'),
    (dict(model='small_cnn', bn_momentum=1.5), r'bn_momentum'),
])
def test_bad_config_raises(cfg, pattern):
  with pytest.raises(ConfigError, match=pattern):
    models.create_model(base_config(**cfg), num_classes=10)


def test_unknown_model_lists_models():
  with pytest.raises(ConfigError) as e:
    models.create_model(base_config(model='vgg'), num_classes=10)
  for name in models.MODELS:
    assert name in str(e.value)
  assert issubclass(ConfigError, ValueError)


def test_bad_shortcut_raises():
  with pytest.raises(ConfigError, match='shortcut'):
    models.ResNetCifar(10, depth=20, shortcut='C')


# ---- layer helpers on hand-made trees ---------------------------------------

def test_avg_pool_gradient_definition():
  k = jnp.arange(3 * 3 * 2 * 4, dtype=jnp.float32).reshape(3, 3, 2, 4)
  b = jnp.array([1., 2., 3., 4.])
  np.testing.assert_allclose(models.avg_pool_gradient({'kernel': k}),
                             k.reshape(-1, 4).mean(0))
  np.testing.assert_allclose(
      models.avg_pool_gradient({'kernel': k[0, 0], 'bias': b}),
      jnp.concatenate([k[0, 0].mean(0), b]))
  s = jnp.array([5., 6., 7., 8.])
  np.testing.assert_allclose(models.avg_pool_gradient({'scale': s, 'bias': b}),
                             jnp.concatenate([s, b]))
  assert models.layer_feature_size({'kernel': k}) == 4
  assert models.layer_feature_size({'kernel': k[0, 0], 'bias': b}) == 8
  assert models.layer_feature_size({'scale': s, 'bias': b}) == 8
  assert models.pooled_axes(k.shape) == (0, 1, 2)
  assert models.layer_kind({'kernel': k}) == 'conv'
  assert models.layer_kind({'kernel': k[0, 0], 'bias': b}) == 'dense'
  assert models.layer_kind({'scale': s, 'bias': b}) == 'norm'


def test_layer_of_and_nested_paths():
  tree = {'params': {'stem_conv': {'kernel': jnp.zeros((3, 3, 1, 2))},
                     'head': {'kernel': jnp.zeros((2, 3)),
                              'bias': jnp.zeros(3)}},
          'batch_stats': {'stem_bn': {'mean': jnp.zeros(2),
                                      'var': jnp.ones(2)}}}
  paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  assert sorted({models.layer_of(p) for p in paths}) == [
      'head', 'stem_bn', 'stem_conv']
  assert models.layer_of('stage1_block1_conv1/kernel') == 'stage1_block1_conv1'
  assert models.layer_of(('head', 'bias')) == 'head'
  nested = {'head': {'kernel': 1}, 'stage2_block1_bn1': {'scale': 1},
            'stage1_block2_conv2': {'kernel': 1},
            'stage1_block2_preact_bn1': {'scale': 1},
            'stage10_block1_conv1': {'kernel': 1}, 'final_bn': {'scale': 1},
            'stem_conv': {'kernel': 1}}
  assert models.layer_names(nested) == [
      'stem_conv', 'stage1_block2_preact_bn1', 'stage1_block2_conv2',
      'stage2_block1_bn1', 'stage10_block1_conv1', 'final_bn', 'head']
  with pytest.raises(ValueError, match='variables'):
    models.layer_names(tree)
  merged = models.merge_layers({'a/x': {'kernel': 1}, 'a/y': {'bias': 2}})
  assert merged == {'a': {'x': {'kernel': 1}, 'y': {'bias': 2}}}
  assert models.split_by_layers(merged, ['a/y']) == {'a/y': {'bias': 2}}
  replaced = models.merge_layers({'a/x': {'kernel': 5}}, base=merged)
  assert replaced['a'] == {'x': {'kernel': 5}, 'y': {'bias': 2}}
  assert merged['a']['x'] == {'kernel': 1}  # base not mutated
