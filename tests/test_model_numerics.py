"""The XLA:CPU-friendly conv in famus_jax.models.common computes plain Flax's function.

``common.conv`` feeds ``nn.Conv`` a materialised copy of its input
(``common.materialize``, see its docstring) so that XLA:CPU stops recomputing
the residual stream inside the backward pass. These tests check, for small
models, against the same models built from plain ``flax.linen.Conv``:
parameters (names, shapes, init values), outputs, batch_stats, gradients,
forward-mode (``jax.jvp``), ``jax.linearize`` + transpose and
reverse-over-reverse, all within 1e-5 relative (float32 rounding).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from famus_jax.models import common
from famus_jax.models import ResNetCifar, SmallCNN, WideResNet

TOL = 1e-5
NUM_CLASSES = 5
BATCH = 8


plain_conv = functools.partial(common.conv, materialize_input=False)  # a plain nn.Conv


@contextlib.contextmanager
def plain_flax():
  new = common.conv
  common.conv = plain_conv
  try:
    yield
  finally:
    common.conv = new


def key(seed: int):
  # 'rbg' keys: compiling model.init with threefry keys is ~3x slower on CPU.
  return jax.random.key(seed, impl='rbg')


def run(fn, *args, plain: bool):
  """jit(fn)(*args), traced with the plain-Flax or the production conv."""
  with plain_flax() if plain else contextlib.nullcontext():
    # A fresh function each time: jit must not reuse the other variant's trace.
    return jax.jit(lambda *a: fn(*a))(*args)


def rel_err(a, b):
  a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
  b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def assert_close(a, b, what):
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    assert np.shape(x) == np.shape(y), (what, path)
    err = rel_err(x, y)
    assert err < TOL, f'{what} {jax.tree_util.keystr(path)}: relative error {err:.2e}'


MODELS = {
    'resnet8_A': lambda: ResNetCifar(NUM_CLASSES, depth=8, shortcut='A'),
    'resnet8_B': lambda: ResNetCifar(NUM_CLASSES, depth=8, shortcut='B'),
    'wrn10_1': lambda: WideResNet(NUM_CLASSES, depth=10, widen_factor=1),
    'small_cnn': lambda: SmallCNN(NUM_CLASSES, width=4),
}


@pytest.fixture(scope='module', params=sorted(MODELS))
def setup(request):
  model = MODELS[request.param]()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(BATCH, 16, 16, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, NUM_CLASSES, BATCH), jnp.int32)
  init = lambda: model.init(key(1), x, train=False)
  reference = run(init, plain=True)
  initial = run(init, plain=False)
  # Move away from the init so that BatchNorm scales/biases and the running
  # statistics are not trivial.
  variables = jax.tree.map(
      lambda p: p + 0.1 * jnp.asarray(rng.normal(size=p.shape), p.dtype), initial)
  variables['batch_stats'] = jax.tree.map(jnp.abs, variables['batch_stats'])

  def apply(params, batch_stats, images, train):
    out, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                               train=train, return_features=True,
                               mutable=['batch_stats'])
    return out, mutated['batch_stats']

  def loss_vec(params, batch_stats, images):
    (logits, _), _ = apply(params, batch_stats, images, True)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)[:, 0]

  return dict(model=model, x=x, variables=variables, initial=initial, reference=reference,
              apply=apply, loss_vec=loss_vec, rng=rng)


def test_same_parameter_tree_and_init(setup):
  new, ref = setup['initial'], setup['reference']
  assert jax.tree.structure(new) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('train', [True, False])
def test_outputs_and_batch_stats(setup, train):
  v = setup['variables']
  args = (v['params'], v['batch_stats'], setup['x'])
  f = lambda p, s, x: setup['apply'](p, s, x, train)
  new = run(f, *args, plain=False)
  ref = run(f, *args, plain=True)
  assert_close(new[0], ref[0], 'logits/features')
  assert_close(new[1], ref[1], 'batch_stats')
  if train:  # the running averages moved
    assert rel_err(new[1], v['batch_stats']) > 1e-3


def test_gradients(setup):
  v = setup['variables']
  f = jax.value_and_grad(lambda p, s, x: jnp.mean(setup['loss_vec'](p, s, x)), argnums=(0, 2))
  args = (v['params'], v['batch_stats'], setup['x'])
  new = run(f, *args, plain=False)
  ref = run(f, *args, plain=True)
  assert_close(new, ref, 'value_and_grad')


def test_jvp_and_linearize_transpose(setup):
  v, rng = setup['variables'], setup['rng']
  params, stats, x = v['params'], v['batch_stats'], setup['x']
  tangent = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  cotangent = jnp.asarray(rng.normal(size=(BATCH,)), jnp.float32)
  fn = lambda p: setup['loss_vec'](p, stats, x)

  def forward_and_transpose(p, t, ct):
    out, jvp_out = jax.jvp(fn, (p,), (t,))
    _, lin = jax.linearize(fn, p)
    (vjp_out,) = jax.linear_transpose(lin, p)(ct)
    return out, jvp_out, lin(t), vjp_out

  new = run(forward_and_transpose, params, tangent, cotangent, plain=False)
  ref = run(forward_and_transpose, params, tangent, cotangent, plain=True)
  for a, b, what in zip(new, ref, ['primal', 'jvp', 'linearize', 'transpose']):
    assert_close(a, b, what)
  # linearize/transpose agree with jvp/vjp of the same implementation.
  assert rel_err(new[2], new[1]) < TOL


def test_reverse_over_reverse(setup):
  """d/d eps of the loss after a virtual SGD step weighted by eps (MW-Net's path)."""
  v = setup['variables']
  params, stats, x = v['params'], v['batch_stats'], setup['x']
  eps = jnp.full((BATCH,), 1.0 / BATCH, jnp.float32)

  def meta(e):
    grads = jax.grad(lambda p: jnp.sum(e * setup['loss_vec'](p, stats, x)))(params)
    virtual = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return jnp.mean(setup['loss_vec'](virtual, stats, x[::-1]))

  new = run(jax.grad(meta), eps, plain=False)
  ref = run(jax.grad(meta), eps, plain=True)
  assert_close(new, ref, 'meta gradient')


def test_materialize_is_the_identity():
  special = jnp.asarray([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, 1e-40, -3e38],
                        jnp.float32)
  for first in special:  # the element `one` is derived from
    x = special.at[0].set(first)
    y = jax.jit(common.materialize)(x)
    y, x = np.asarray(y), np.asarray(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(np.isnan(y), nan)
    # Bit-identical (-0 included) except for NaN payloads and denormals, which
    # XLA:CPU flushes to zero in every arithmetic op (the conv included).
    normal = ~nan & ((np.abs(x) >= np.finfo(np.float32).tiny) | (x == 0))
    np.testing.assert_array_equal(y.view(np.uint32)[normal], x.view(np.uint32)[normal])
    np.testing.assert_array_equal(y[~nan & ~normal], 0.0)
  t = jnp.arange(9.0)
  assert jnp.array_equal(jax.jvp(common.materialize, (special,), (t,))[1], t)
  assert jnp.array_equal(jax.grad(lambda z: jnp.vdot(t, common.materialize(z)))(special), t)
  assert common.materialize(jnp.zeros((0, 3))).shape == (0, 3)
  batched = jnp.arange(12.0).reshape(3, 4) - 5.0
  assert jnp.array_equal(jax.vmap(common.materialize)(batched), batched)


def test_xla_keeps_the_division():
  """If XLA ever folds ``one``, the numerics stay right but the speed-up is gone."""
  hlo = jax.jit(lambda x: common.materialize(x) * 2.0).lower(
      jnp.ones((4, 4, 4, 4))).compile().as_text()
  assert 'divide' in hlo
