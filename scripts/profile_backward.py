"""Where the forward+backward time of famus_jax's CIFAR ResNets goes on XLA:CPU.

Usage (from the repository root):

  python scripts/profile_backward.py                       # all sections
  python scripts/profile_backward.py --sections models --runs 20
  python scripts/profile_backward.py --sections trace --models resnet32

Every comparison is made inside one process, with the variants' runs
interleaved, reporting medians (the CPU is shared; absolute numbers drift by
2x between minutes, ratios much less). Compile time is excluded and every
timed call ends with ``block_until_ready``.

Variants of the model code:
  plain    the original ``common.conv``: a plain ``flax.linen.Conv``;
  current  ``common.conv`` as in the repository (its input goes through
           ``common.materialize``).

Sections:
  models  forward (train mode, batch_stats updated) and value_and_grad of a
          softmax cross-entropy, ResNet-32 on (B, 32, 32, 3) and ResNet-8 on
          (B, 28, 28, 1), plain vs current.
  ops     per-op micro-benchmarks at ResNet-32 shapes: forward, forward+
          backward, backward (= the difference) and, for convs, the input and
          kernel gradients alone; plus one whole stage of 5 BasicBlocks, plain
          vs current, which shows the fusion problem without the rest.
  trace   XLA:CPU's own per-instruction timings (jax.profiler trace of a few
          value_and_grad steps), grouped into categories, plain vs current.
  candidates  other fixes tried, value_and_grad of the first model: an
          optimization_barrier on the conv input (XLA:CPU removes it before
          fusion), a BatchNorm with a hand-written custom_vjp (timing only: a
          custom_vjp has no forward mode), and kernel-gradient alternatives.
  flags   value_and_grad of the current variant under XLA:CPU debug options,
          given as per-compile ``compiler_options`` (so also in one process).
  numerics  loss, batch_stats and gradients of both variants in float32
          against the plain model in float64 (ResNet-32's float32 gradients
          are only good to ~1e-3 at init, for the plain model as well).
  torch   XLA:CPU against PyTorch (the benchmark's peer, famus_jax/tools/
          torch_peer_nets.py; needs the `peers` extra) on the same shapes, timed in
          the same interleaved rounds on the same threads: each conv's
          forward, input gradient (dX) and kernel gradient (dW) alone,
          BatchNorm forward and forward+backward, and the whole model's
          forward and forward+backward (value_and_grad vs loss.backward());
          then the per-step totals of the conv parts, weighted by how often
          each shape occurs in ResNet-32.
  parts   the pieces a meta step is made of, each its own jitted function:
          forward, forward + backward, the linearised virtual step (VJPs), the
          JVPs of all layers and of the last block, the validation backward
          restricted to the last block (the cost of a piece is a difference
          of two rows). Not in the default sections.
"""

import collections
import contextlib
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from famus_jax.famus import layer_sets
from famus_jax.meta import meta_gradient as mg
from famus_jax.models import common
from famus_jax.models import ResNetCifar, layer_names
from famus_jax.models.resnet_cifar import shortcut_a
from famus_jax.tools import xla_trace
from famus_jax.train.step import cross_entropy

NUM_CLASSES = 10
VARIANTS = ('plain', 'current')
DN = ('NHWC', 'HWIO', 'NHWC')


# ---- variants -------------------------------------------------------------

plain_conv = functools.partial(common.conv, materialize_input=False)  # a plain nn.Conv


@contextlib.contextmanager
def variant(name):
  if name not in VARIANTS:
    raise ValueError(name)
  saved = common.conv
  if name == 'plain':
    common.conv = plain_conv
  try:
    yield
  finally:
    common.conv = saved


def compile_fn(fn, args, variant_name='current', options=None):
  """AOT-compiled jit(fn) for ``args``, traced under ``variant_name``."""
  with variant(variant_name):
    # A fresh function object: jit must not reuse another variant's trace.
    return jax.jit(lambda *a: fn(*a), compiler_options=options).lower(*args).compile()


# ---- timing ---------------------------------------------------------------

def bench(fns, runs, seed=0):
  """{label: (compiled, args)} -> {label: (median s, min s)}.

  Interleaved, in a fresh random order every round: a call right after a big
  one (e.g. a forward right after a value_and_grad) runs measurably slower.
  """
  times = {k: [] for k in fns}
  for f, a in fns.values():  # warm-up
    jax.block_until_ready(f(*a))
  order = list(fns)
  rng = np.random.default_rng(seed)
  for _ in range(runs):
    for i in rng.permutation(len(order)):
      k = order[i]
      f, a = fns[k]
      t0 = time.perf_counter()
      jax.block_until_ready(f(*a))
      times[k].append(time.perf_counter() - t0)
  return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


def ms(seconds):
  return f'{seconds * 1e3:9.2f}'


# ---- models ---------------------------------------------------------------

MODEL_SPECS = {
    'resnet32': (32, (32, 32, 3)),
    'resnet8': (8, (28, 28, 1)),
}


def model_problem(name, batch):
  depth, hwc = MODEL_SPECS[name]
  model = ResNetCifar(NUM_CLASSES, depth=depth)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch,) + hwc), jnp.float32)
  labels = jnp.asarray(rng.integers(0, NUM_CLASSES, batch), jnp.int32)
  with variant('plain'):
    variables = jax.jit(lambda: model.init(jax.random.key(0, impl='rbg'), x,
                                           train=False))()

  def loss(params, batch_stats, images):
    logits, mutated = model.apply({'params': params, 'batch_stats': batch_stats},
                                  images, train=True, mutable=['batch_stats'])
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)
    return jnp.mean(ce), mutated['batch_stats']

  args = (variables['params'], variables['batch_stats'], x)
  return loss, jax.value_and_grad(loss, has_aux=True), args


def section_models(opts):
  print('\n== models: train-mode forward and value_and_grad (ms, median of '
        f'{opts.runs}; min in brackets) ==')
  fns = {}
  for name in opts.models:
    loss, vg, args = model_problem(name, opts.batch)
    for v in VARIANTS:
      fns[(name, 'forward', v)] = (compile_fn(loss, args, v), args)
      fns[(name, 'value_and_grad', v)] = (compile_fn(vg, args, v), args)
  res = bench(fns, opts.runs)
  print(f'{"model":10s} {"what":16s} {"plain":>20s} {"current":>20s} {"speed-up":>9s}')
  for name in opts.models:
    for what in ('forward', 'value_and_grad'):
      p, c = res[(name, what, 'plain')], res[(name, what, 'current')]
      print(f'{name:10s} {what:16s} {ms(p[0])} ({ms(p[1])}) {ms(c[0])} '
            f'({ms(c[1])}) {p[0] / c[0]:8.2f}x')
    for v in VARIANTS:
      f, g = res[(name, 'forward', v)][0], res[(name, 'value_and_grad', v)][0]
      print(f'{name:10s} {v:8s} backward ~ value_and_grad - forward = '
            f'{ms(g - f)} ms = {(g - f) / f:.1f}x forward')


# ---- op micro-benchmarks --------------------------------------------------

def conv_op(stride, pad):
  return lambda x, w: lax.conv_general_dilated(
      x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=DN)


def bn_op(x, scale, bias):
  """flax BatchNorm in train mode (batch statistics, running averages updated)."""
  c = x.shape[-1]
  y, _ = common.batch_norm(True, 0.9, 'bn').apply(
      {'params': {'scale': scale, 'bias': bias},
       'batch_stats': {'mean': jnp.zeros((c,)), 'var': jnp.ones((c,))}},
      x, mutable=['batch_stats'])
  return y


class Stage(nn.Module):
  """n post-activation BasicBlocks with identity shortcuts (ResNet-32 stage 1)."""
  blocks: int
  channels: int

  @nn.compact
  def __call__(self, x):
    bn = lambda name: common.batch_norm(True, 0.9, name)
    for b in range(self.blocks):
      out = common.conv(self.channels, 3, 1, f'b{b}_conv1')(x)
      out = nn.relu(bn(f'b{b}_bn1')(out))
      out = common.conv(self.channels, 3, 1, f'b{b}_conv2')(out)
      out = bn(f'b{b}_bn2')(out)
      x = nn.relu(out + x)
    return x


def op_cases(b):
  """(label, fn, float args, conv?) at ResNet-32 / batch-b shapes."""
  rng = np.random.default_rng(1)
  arr = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  cases = []
  for hw, cin, cout in [(32, 16, 16), (16, 32, 32), (8, 64, 64)]:
    cases.append((f'conv3x3 s1 {hw}x{hw}x{cin}->{cout}', conv_op(1, 1),
                  (arr(b, hw, hw, cin), arr(3, 3, cin, cout)), True))
  for hw, cin, cout in [(32, 16, 32), (16, 32, 64)]:
    cases.append((f'conv3x3 s2 {hw}x{hw}x{cin}->{cout}', conv_op(2, 1),
                  (arr(b, hw, hw, cin), arr(3, 3, cin, cout)), True))
  for hw, cin, cout in [(32, 16, 32), (16, 32, 64)]:
    cases.append((f'conv1x1 s2 {hw}x{hw}x{cin}->{cout} (shortcut B)',
                  conv_op(2, 0), (arr(b, hw, hw, cin), arr(1, 1, cin, cout)), True))
  for hw, c in [(32, 16), (16, 32), (8, 64)]:
    cases.append((f'BatchNorm train {hw}x{hw}x{c}', bn_op,
                  (arr(b, hw, hw, c), 1 + 0.1 * arr(c), 0.1 * arr(c)), False))
  for hw, cin in [(32, 16), (16, 32)]:
    cases.append((f'shortcut A {hw}x{hw}x{cin}->{hw // 2}x{hw // 2}x{2 * cin}',
                  lambda x, c=2 * cin: shortcut_a(x, c, 2), (arr(b, hw, hw, cin),), False))
  cases.append(('global avg pool 8x8x64', common.global_avg_pool, (arr(b, 8, 8, 64),), False))
  cases.append(('relu 32x32x16', nn.relu, (arr(b, 32, 32, 16),), False))
  cases.append(('residual add+relu 32x32x16', lambda x, y: nn.relu(x + y),
                (arr(b, 32, 32, 16), arr(b, 32, 32, 16)), False))
  return cases


def fwd_bwd(fn):
  """(*primals, cotangent) -> (fn(*primals), gradients w.r.t. all primals)."""
  def f(*a):
    *primals, ct = a
    out, pullback = jax.vjp(fn, *primals)
    return out, pullback(ct)
  return f


def section_ops(opts):
  b = opts.batch
  print(f'\n== ops at ResNet-32 shapes, batch {b} (ms, median of {opts.runs}) ==')
  fns, rows = {}, []
  for label, fn, args, is_conv in op_cases(b):
    ct = jnp.ones_like(jax.eval_shape(fn, *args))
    fns[(label, 'fwd')] = (compile_fn(fn, args), args)
    fns[(label, 'fwd+bwd')] = (compile_fn(fwd_bwd(fn), args + (ct,)),
                               args + (ct,))
    if is_conv:
      for what, argnums in (('dx', (0,)), ('dw', (1,))):
        g = lambda *a, argnums=argnums, fn=fn: jax.vjp(
            lambda z: fn(*[z if i in argnums else a[i] for i in range(2)]),
            a[argnums[0]])[1](a[2])
        fns[(label, what)] = (compile_fn(g, args + (ct,)), args + (ct,))
    rows.append((label, is_conv))
  # One whole stage: 5 BasicBlocks, plain vs current common.conv.
  x = jnp.asarray(np.random.default_rng(2).normal(size=(b, 32, 32, 16)), jnp.float32)
  stage = Stage(5, 16)
  with variant('plain'):
    params = stage.init(jax.random.key(0, impl='rbg'), x)['params']
  run_stage = lambda p, x: stage.apply({'params': p}, x, mutable=['batch_stats'])[0]
  stage_loss = lambda p, x: jnp.sum(run_stage(p, x) ** 2)
  for v in VARIANTS:
    fns[(f'stage of 5 blocks 32x32x16 [{v}]', 'fwd')] = (
        compile_fn(run_stage, (params, x), v), (params, x))
    fns[(f'stage of 5 blocks 32x32x16 [{v}]', 'fwd+bwd')] = (
        compile_fn(jax.value_and_grad(stage_loss, argnums=(0, 1)), (params, x), v),
        (params, x))
    rows.append((f'stage of 5 blocks 32x32x16 [{v}]', False))
  res = bench(fns, opts.runs)
  print(f'{"op":44s} {"fwd":>9s} {"fwd+bwd":>9s} {"bwd":>9s} {"bwd/fwd":>8s} '
        f'{"dx only":>9s} {"dw only":>9s}')
  for label, is_conv in rows:
    f, fb = res[(label, 'fwd')][0], res[(label, 'fwd+bwd')][0]
    extra = (f'{ms(res[(label, "dx")][0])} {ms(res[(label, "dw")][0])}'
             if is_conv else '')
    print(f'{label:44s} {ms(f)} {ms(fb)} {ms(fb - f)} {(fb - f) / f:8.1f} {extra}')


# ---- trace ----------------------------------------------------------------

def profile_step(compiled, args, batch, steps=3):
  per_instr = xla_trace.instruction_seconds(
      lambda: jax.block_until_ready(compiled(*args)), steps)
  return xla_trace.categorize(per_instr, compiled.as_text(), batch), per_instr


def section_trace(opts):
  print('\n== trace: XLA:CPU thunk time per value_and_grad step by category (ms; '
        'a fusion is charged to the category of most of its ops) ==')
  for name in opts.models:
    _, vg, args = model_problem(name, opts.batch)
    cats = {}
    for v in VARIANTS:
      compiled = compile_fn(vg, args, v, {xla_trace.TRACEME_OPTION: True})
      cats[v], per_instr = profile_step(compiled, args, opts.batch)
      if opts.top:
        print(f'-- {name} [{v}] top instructions:')
        for instr, t in per_instr.most_common(opts.top):
          print(f'   {ms(t)}  {instr}')
    print(f'-- {name}: {"category":46s} {"plain":>9s} {"current":>9s}')
    for c in sorted(set(cats['plain']) | set(cats['current']),
                    key=lambda c: -cats['plain'].get(c, 0.0)):
      print(f'   {c:52s} {ms(cats["plain"].get(c, 0.0))} {ms(cats["current"].get(c, 0.0))}')
    print(f'   {"total thunk time":52s} {ms(sum(cats["plain"].values()))} '
          f'{ms(sum(cats["current"].values()))}')


# ---- candidate fixes --------------------------------------------------------

def barrier_conv(features, kernel, stride, name):
  """Candidate: nn.Conv on lax.optimization_barrier(input)."""
  class BarrierConv(nn.Conv):

    def __call__(self, inputs):
      return super().__call__(lax.optimization_barrier(inputs))

  pad = kernel // 2
  return BarrierConv(features, (kernel, kernel), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)), use_bias=False,
                     kernel_init=common.conv_init, name=name)


@jax.custom_vjp
def _bn_analytic(x, scale, bias):
  return _bn_analytic_fwd(x, scale, bias)[0][0]


def _bn_analytic_fwd(x, scale, bias):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.maximum(0.0, jnp.mean(x * x, axes) - mean * mean)
  rstd = lax.rsqrt(var + common.BN_EPSILON)
  xhat = (x - mean) * rstd
  return (xhat * scale + bias, mean, var), (xhat, rstd, scale)


def _bn_analytic_bwd(res, g):
  xhat, rstd, scale = res
  axes = tuple(range(xhat.ndim - 1))
  n = xhat.size // xhat.shape[-1]
  dbias = jnp.sum(g, axes)
  dscale = jnp.sum(g * xhat, axes)
  dx = (scale * rstd) * (g - (dbias + xhat * dscale) / n)
  return dx, dscale, dbias


_bn_analytic.defvjp(lambda x, s, b: (_bn_analytic(x, s, b), _bn_analytic_fwd(x, s, b)[1]),
                    _bn_analytic_bwd)


class AnalyticBN(nn.Module):
  """Candidate (timing only): train-mode BN with a hand-written custom_vjp.

  Same parameters and batch_stats as nn.BatchNorm, but a custom_vjp has no
  forward mode (jax.jvp), which the meta-gradient core needs.
  """
  train: bool
  momentum: float

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    if not self.train:
      return (x - ra_mean.value) * lax.rsqrt(ra_var.value + common.BN_EPSILON) * scale + bias
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(lax.stop_gradient(x), axes)
    var = jnp.maximum(0.0, jnp.mean(lax.stop_gradient(x) ** 2, axes) - mean * mean)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return _bn_analytic(x, scale, bias)


def analytic_batch_norm(train, momentum, name):
  return AnalyticBN(train, momentum, name=name)


def section_candidates(opts):
  name = opts.models[0]
  print(f'\n== candidates: {name} value_and_grad, model-level variants (ms, median of '
        f'{opts.runs}) ==')
  _, vg, args = model_problem(name, opts.batch)
  patches = {
      'plain (flax nn.Conv)': dict(conv=plain_conv),
      'optimization_barrier on conv input': dict(conv=barrier_conv),
      'current (materialize conv input)': {},
      'current + analytic custom_vjp BN': dict(batch_norm=analytic_batch_norm),
  }
  fns = {}
  for label, patch in patches.items():
    saved = {k: getattr(common, k) for k in patch}
    for k, v in patch.items():
      setattr(common, k, v)
    try:
      fns[label] = (compile_fn(vg, args, 'current'), args)
    finally:
      for k, v in saved.items():
        setattr(common, k, v)
  outs = {k: f(*a) for k, (f, a) in fns.items()}
  ref = outs['plain (flax nn.Conv)']
  res = bench(fns, opts.runs)
  base = res['plain (flax nn.Conv)'][0]
  for label, (med, lo) in res.items():
    err = max(float(jnp.linalg.norm(a - b) / (jnp.linalg.norm(b) + 1e-30))
              for a, b in zip(jax.tree.leaves(outs[label][1]), jax.tree.leaves(ref[1])))
    print(f'{label:40s} {ms(med)} ({ms(lo)})  {base / med:5.2f}x  '
          f'max rel. grad diff vs plain {err:.1e}')

  print(f'\n-- kernel gradient (dW) of a 3x3 conv, alternatives to XLA\'s (ms, '
        f'median of {opts.runs}) --')
  rng = np.random.default_rng(3)
  fns, b = {}, opts.batch
  for hw, cin, cout in [(32, 16, 16), (16, 32, 32), (8, 64, 64)]:
    x = jnp.asarray(rng.normal(size=(b, hw, hw, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(b, hw, hw, cout)), jnp.float32)
    for label, fn in [('XLA (conv transpose rule)', _dw_xla), ('9 tap dots', _dw_taps),
                      ('im2col + 1 dot', _dw_im2col)]:
      fns[(f'{hw}x{hw}x{cin}->{cout}', label)] = (compile_fn(fn, (x, w, g)), (x, w, g))
  res = bench(fns, opts.runs)
  for (shape, label), (med, lo) in res.items():
    print(f'{shape:16s} {label:28s} {ms(med)} ({ms(lo)})')


def _dw_xla(x, w, g):
  return jax.vjp(lambda k: conv_op(1, 1)(x, k), w)[1](g)[0]


def _shifted(x):
  _, h, wd, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)]


def _dw_taps(x, w, g):
  c, o = x.shape[-1], g.shape[-1]
  g2 = g.reshape(-1, o)
  taps = [lax.dot_general(t.reshape(-1, c), g2, (((0,), (0,)), ((), ())))
          for t in _shifted(x)]
  return jnp.stack(taps).reshape(w.shape)


def _dw_im2col(x, w, g):
  c, o = x.shape[-1], g.shape[-1]
  patches = jnp.concatenate(_shifted(x), axis=-1).reshape(-1, 9 * c)
  return lax.dot_general(patches, g.reshape(-1, o),
                         (((0,), (0,)), ((), ()))).reshape(w.shape)


# ---- numerics -------------------------------------------------------------

def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _rel(a, b):
  return float(np.linalg.norm(_flat(a) - _flat(b)) / np.linalg.norm(_flat(b)))


def section_numerics(opts):
  """Both float32 variants against the plain model evaluated in float64."""
  name = opts.models[0]
  print(f'\n== numerics: {name} value_and_grad in float32 vs plain in float64 '
        '(relative L2 errors) ==')
  jax.config.update('jax_enable_x64', True)
  try:
    _, vg, args = model_problem(name, opts.batch)
    args64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), args)
    ref = compile_fn(vg, args64, 'plain')(*args64)
    outs = {v: compile_fn(vg, args, v)(*args) for v in VARIANTS}
    for v, ((loss, stats), grads) in outs.items():
      per_leaf = sorted((_rel(a, b), jax.tree_util.keystr(path)) for (path, b), a in zip(
          jax.tree_util.tree_leaves_with_path(ref[1]), jax.tree.leaves(grads)))
      print(f'{v:8s} loss {abs(float(loss) - float(ref[0][0])):.1e}  batch_stats '
            f'{_rel(stats, ref[0][1]):.1e}  all grads {_rel(grads, ref[1]):.1e}  '
            f'worst layer {per_leaf[-1][0]:.1e} {per_leaf[-1][1]}')
    print(f'current vs plain (both float32): all grads '
          f'{_rel(outs["current"][1], outs["plain"][1]):.1e}')
  finally:
    jax.config.update('jax_enable_x64', False)


# ---- XLA flags ------------------------------------------------------------

FLAG_SETS = {
    'default': None,
    'fast_math': {'xla_cpu_enable_fast_math': True},
    'no_ynn_fusion': {'xla_cpu_experimental_ynn_fusion_type': ''},
    'onednn': {'xla_cpu_use_onednn': True},
    'onednn_custom_call': {'xla_cpu_experimental_onednn_custom_call': True},
    'xnnpack': {'xla_cpu_use_xnnpack': True},
    'no_xnnpack': {'xla_cpu_use_xnnpack': False},
    'xnn_graph_greedy': {'xla_cpu_experimental_xnn_graph_fusion_mode':
                         'XNN_GRAPH_FUSION_MODE_GREEDY'},
    'no_fusion_emitters': {'xla_cpu_use_fusion_emitters': False},
    'thunk_runtime_off': {'xla_cpu_use_thunk_runtime': False},
}


def section_flags(opts):
  name = opts.models[0]
  print(f'\n== flags: {name} value_and_grad [current] under XLA:CPU options (ms) ==')
  _, vg, args = model_problem(name, opts.batch)
  fns = {}
  for label, options in FLAG_SETS.items():
    try:
      fns[label] = (compile_fn(vg, args, 'current', options), args)
    except Exception as e:  # pylint: disable=broad-except
      print(f'{label:20s} not available: {str(e).splitlines()[0][:100]}')
  res = bench(fns, opts.runs)
  for label, (med, lo) in res.items():
    print(f'{label:20s} {ms(med)} ({ms(lo)})  {res["default"][0] / med:5.2f}x')


# ---- XLA:CPU against PyTorch -------------------------------------------------

# (label, H = W, C_in, C_out, kernel, stride, count in ResNet-32): every conv of the model.
RESNET32_CONVS = [
    ('stem conv3x3 32x32x3->16', 32, 3, 16, 3, 1, 1),
    ('conv3x3 s1 32x32x16->16', 32, 16, 16, 3, 1, 10),
    ('conv3x3 s2 32x32x16->32', 32, 16, 32, 3, 2, 1),
    ('conv3x3 s1 16x16x32->32', 16, 32, 32, 3, 1, 9),
    ('conv3x3 s2 16x16x32->64', 16, 32, 64, 3, 2, 1),
    ('conv3x3 s1 8x8x64->64', 8, 64, 64, 3, 1, 9),
]


def _torch_conv_fns(torch, b, hw, cin, cout, k, stride):
  """{'fwd' | 'dx' | 'dw': () -> None} for one conv in PyTorch (NCHW, like the peer)."""
  g = torch.Generator().manual_seed(0)
  x = torch.randn(b, cin, hw, hw, generator=g)
  w = torch.randn(cout, cin, k, k, generator=g)
  y = torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)
  gy = torch.ones_like(y)
  conv_bwd = torch.ops.aten.convolution_backward

  def bwd(mask):
    return lambda: conv_bwd(gy, x, w, None, [stride, stride], [k // 2, k // 2], [1, 1], False,
                            [0, 0], 1, mask)

  return {'fwd': lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2),
          'dx': bwd([True, False, False]), 'dw': bwd([False, True, False])}


def _jax_conv_fns(b, hw, cin, cout, k, stride):
  """{'fwd' | 'dx' | 'dw': (compiled, args)} for the same conv in XLA (NHWC)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, hw, hw, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
  fn = conv_op(stride, k // 2)
  ct = jnp.ones_like(jax.eval_shape(fn, x, w))
  dx = lambda x, w, ct: jax.vjp(lambda z: fn(z, w), x)[1](ct)
  dw = lambda x, w, ct: jax.vjp(lambda z: fn(x, z), w)[1](ct)
  return {'fwd': (compile_fn(fn, (x, w)), (x, w)),
          'dx': (compile_fn(dx, (x, w, ct)), (x, w, ct)),
          'dw': (compile_fn(dw, (x, w, ct)), (x, w, ct))}


def _torch_model_fns(torch, tp, name, batch):
  """{'forward' | 'value_and_grad': () -> None}: the peer's model in train mode."""
  depth, hwc = MODEL_SPECS[name]
  model = tp.ResNetCifar(NUM_CLASSES, depth=depth) if hwc[-1] == 3 else None
  if model is None:
    return {}
  model.train()
  g = torch.Generator().manual_seed(0)
  x = torch.randn(batch, hwc[2], hwc[0], hwc[1], generator=g)
  y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)

  def forward():
    with torch.no_grad():
      torch.nn.functional.cross_entropy(model(x)[0], y)

  def value_and_grad():
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x)[0], y).backward()

  return {'forward': forward, 'value_and_grad': value_and_grad}


def section_torch(opts):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from famus_jax.tools import torch_peer_nets as tp  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'\n== torch: skipped, PyTorch is not installed ({e}); pip install -e ".[peers]"')
    return
  torch.set_num_threads(opts.threads)
  b = opts.batch
  print(f'\n== torch: XLA:CPU vs PyTorch {torch.__version__} ({opts.threads} thread(s)), '
        f'batch {b} (ms, median of {opts.runs}) ==')
  fns = {}
  for label, hw, cin, cout, k, stride, _ in RESNET32_CONVS:
    for part, fc in _jax_conv_fns(b, hw, cin, cout, k, stride).items():
      fns[(label, part, 'xla')] = fc
    for part, f in _torch_conv_fns(torch, b, hw, cin, cout, k, stride).items():
      fns[(label, part, 'torch')] = (f, ())
  for name in opts.models:
    loss, vg, args = model_problem(name, opts.batch)
    fns[(name, 'forward', 'xla')] = (compile_fn(loss, args), args)
    fns[(name, 'value_and_grad', 'xla')] = (compile_fn(vg, args), args)
    for part, f in _torch_model_fns(torch, tp, name, b).items():
      fns[(name, part, 'torch')] = (f, ())
  res = bench(fns, opts.runs)
  print(f'{"conv (count in ResNet-32)":36s} {"part":5s} {"XLA":>9s} {"torch":>9s} '
        f'{"XLA/torch":>9s}')
  totals = collections.Counter()
  for label, *_, count in RESNET32_CONVS:
    for part in ('fwd', 'dx', 'dw'):
      x, t = res[(label, part, 'xla')][0], res[(label, part, 'torch')][0]
      totals[(part, 'xla')] += count * x
      totals[(part, 'torch')] += count * t
      print(f'{label + f" (x{count})":36s} {part:5s} {ms(x)} {ms(t)} {x / t:9.2f}')
  print(f'{"per step, all convs":36s}')
  for part in ('fwd', 'dx', 'dw'):
    x, t = totals[(part, 'xla')], totals[(part, 'torch')]
    print(f'{"  sum of count x time":36s} {part:5s} {ms(x)} {ms(t)} {x / t:9.2f}')
  for name in opts.models:
    for part in ('forward', 'value_and_grad'):
      if (name, part, 'torch') in res:
        x, t = res[(name, part, 'xla')][0], res[(name, part, 'torch')][0]
        print(f'{name + " model":36s} {part[:5]:5s} {ms(x)} {ms(t)} {x / t:9.2f}')



# ---- the parts of a meta step ---------------------------------------------

def section_parts(opts):
  """The pieces a meta step is made of, each one jitted function of (params, images).

  Each returns everything it computes (nothing is dead code or constant-folded); the cost of a
  piece is the difference between two rows. 'top': the last residual block's layers.
  """
  for name in opts.models:
    depth, hwc = MODEL_SPECS[name]
    model = ResNetCifar(NUM_CLASSES, depth=depth)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(opts.batch,) + hwc), jnp.float32)
    labels = jnp.asarray(rng.integers(0, NUM_CLASSES, opts.batch), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:2], train=False)
    params, stats = variables['params'], variables['batch_stats']
    names = layer_names(params)
    top = layer_sets.residual_blocks(names)[-1]
    top_layers = names[next(i for i, n in enumerate(names) if n.startswith(top)):]
    tangent = jax.tree.map(lambda a: 1e-2 * jnp.ones_like(a), params)
    top_tangent = {k: v for k, v in mg.flat_params(tangent).items()
                   if mg.layer_of(k) in top_layers}
    b = opts.batch

    def logits_fn(p, x, stats=stats):
      out, _ = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                           mutable=['batch_stats'])
      return out

    def loss_fn(p, x, labels=labels):
      return jnp.mean(cross_entropy(logits_fn(p, x), labels))

    def virtual(p, x):
      logits, jvp = jax.linearize(lambda q: logits_fn(q, x), p)
      vjp = jax.linear_transpose(jvp, p)
      return logits, jvp, lambda c: vjp(c)[0], vjp(jax.nn.softmax(logits) / b)[0]

    def two_vjps(p, x):
      logits, _, vjp, g1 = virtual(p, x)
      return g1, vjp(jax.nn.softmax(2 * logits) / b)

    def jvp_all(p, x, tangent=tangent):
      _, jvp, _, g1 = virtual(p, x)
      return g1, jvp(tangent)

    def jvp_top(p, x, labels=labels, top_tangent=top_tangent):
      return virtual(p, x)[3], mg.directional_losses(
          lambda q: cross_entropy(logits_fn(q, x), labels), p, top_tangent)

    def restricted(p, x, top_layers=top_layers):
      return mg.restricted_value_and_grad(lambda q: loss_fn(q, x), p, top_layers)

    fns = {
        'forward (train mode)': loss_fn,
        'forward + backward (ERM core)': jax.value_and_grad(loss_fn),
        'linearize + VJP (virtual step)': lambda p, x: virtual(p, x)[3],
        'linearize + 2 VJPs (virtual + actual)': two_vjps,
        'linearize + VJP + JVP all (linearized)': jvp_all,
        f'linearize + VJP + JVP from {top} (restricted)': jvp_top,
        f'val forward + backward from {top}': restricted,
    }
    res = bench({k: (jax.jit(f), (params, images)) for k, f in fns.items()}, opts.runs)
    print(f'\n== parts of a meta step: {name}, batch {b} (ms, median of {opts.runs}; min in '
          'brackets) ==')
    for k, (median, low) in res.items():
      print(f'{k:52s} {ms(median)} ({ms(low)})')


SECTIONS = {'models': section_models, 'ops': section_ops, 'trace': section_trace,
            'candidates': section_candidates, 'flags': section_flags,
            'numerics': section_numerics, 'torch': section_torch, 'parts': section_parts}


def define_flags():
  flags.DEFINE_list('sections', ['models', 'ops', 'trace', 'candidates', 'flags', 'numerics'],
                    f'Sections to run, from {sorted(SECTIONS)}.')
  flags.DEFINE_list('models', ['resnet32', 'resnet8'], f'From {sorted(MODEL_SPECS)}.')
  flags.DEFINE_integer('batch', 100, 'Batch size.')
  flags.DEFINE_integer('runs', 10, 'Timed rounds.')
  flags.DEFINE_integer('threads', 1,
                       'torch: PyTorch intra-op threads (pin the process with taskset).')
  flags.DEFINE_integer('top', 0, 'trace: also list the N slowest HLO instructions.')
  flags.register_validator('models', lambda ms: set(ms) <= set(MODEL_SPECS),
                           f'unknown model; choose from {sorted(MODEL_SPECS)}')
  flags.register_validator('sections', lambda ss: set(ss) <= set(SECTIONS),
                           f'unknown section; choose from {sorted(SECTIONS)}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  opts = flags.FLAGS
  print(f'jax {jax.__version__}, devices {jax.devices()}, '
        f'{os.cpu_count()} CPUs, batch {opts.batch}')
  for s in opts.sections:
    SECTIONS[s](opts)


if __name__ == '__main__':
  define_flags()
  app.run(main)
