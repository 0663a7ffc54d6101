"""Layer-level views of a model's parameters, for FaMUS-style layer-wise meta gradients.

A *layer* is a parameterised leaf module (Conv, BatchNorm, Dense), named by the '/'-joined path of
its sub-dict in `params`. All famus_jax models are flat, so a layer name is simply a top-level key
of `params`.

The naming scheme, the same in every model and listed here in network (forward) order:

  stem_conv, stem_bn,                                    # stem
  stage{s}_block{b}_{sub}  for s = 1, 2, ..., b = 1, 2, ..., with sub in
      preact_bn1, conv1, bn1, preact_bn2, conv2, bn2, conv3, bn3, shortcut_conv, shortcut_bn
      (in that order; post-activation blocks use conv/bn, pre-activation blocks preact_bn/conv,
      Bottleneck blocks add conv3/bn3),
  final_bn,                                              # pre-activation networks
  head                                                   # the final Dense, always last

`layer_names(params)` sorts by this scheme, so it gives the forward order for any dict with the
model's keys, however those keys are ordered (JAX sorts dict keys when it flattens them, so a
params tree that went through `jax.tree.map` or an optimiser update is alphabetical, not in
creation order). `layer_names_in_call_order(model, variables, x)` instead records the order in
which the leaf modules are actually called (`flax.linen.intercept_methods`); the tests check that
the two agree for every model.

Avg-Pool of a layer's gradient (FaMUS, Xu et al., CVPR 2021, Eq. 8): a kernel is averaged over
every axis but the output-channel axis, which is the last axis in Flax (a conv kernel
(kh, kw, in, out) is averaged over (0, 1, 2), a dense kernel (in, out) over 0); the bias is kept
as it is, and a BatchNorm layer gives its scale and bias gradients unchanged.
"""

import math
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Sub-layer order inside a residual block (covers post- and pre-activation).
BLOCK_SUBLAYERS = ('preact_bn1', 'conv1', 'bn1', 'preact_bn2', 'conv2', 'bn2', 'conv3', 'bn3',
                   'shortcut_conv', 'shortcut_bn')
_FIXED = {'stem_conv': (0, 0, 0, 0), 'stem_bn': (0, 0, 0, 1),
          'final_bn': (2, 0, 0, 0), 'head': (3, 0, 0, 0)}
_BLOCK_RE = re.compile(r'^stage(\d+)_block(\d+)_(%s)$' % '|'.join(
    BLOCK_SUBLAYERS))

# Leaf-variable names of a layer's sub-dict (in params and in batch_stats).
LEAF_NAMES = ('kernel', 'bias', 'scale', 'mean', 'var')
COLLECTIONS = ('params', 'batch_stats')
# Flax kernels keep the output channels on the last axis.
OUTPUT_CHANNEL_AXIS = -1

Tree = Mapping[str, Any]


def _name_key(name: str) -> tuple:
  """The sort key (a 4-tuple of ints) of one layer-name component under the naming scheme.

  A name outside the scheme raises ValueError (with a hint when it is a collection name).
  """
  if name in _FIXED:
    return _FIXED[name]
  m = _BLOCK_RE.match(name)
  if m is None:
    hint = (' (pass variables["params"], not the whole variables dict)'
            if name in COLLECTIONS else '')
    raise ValueError(
        f'layer name {name!r} does not follow the famus_jax naming scheme '
        f'(stem_conv, stem_bn, stage<s>_block<b>_<sub>, final_bn, head){hint}.')
  return (1, int(m.group(1)), int(m.group(2)),
          BLOCK_SUBLAYERS.index(m.group(3)))


def _is_layer(d: Any) -> bool:
  """Whether `d` is a leaf module's dict: a non-empty mapping none of whose values is a mapping."""
  return isinstance(d, Mapping) and bool(d) and not any(
      isinstance(v, Mapping) for v in d.values())


def leaf_layer_paths(params: Tree, prefix: tuple = ()) -> list[tuple]:
  """The paths (tuples of keys, below `prefix`) of every leaf module in `params`, in dict order."""
  paths = []
  for k, v in params.items():
    if _is_layer(v):
      paths.append(prefix + (k,))
    elif isinstance(v, Mapping):
      paths.extend(leaf_layer_paths(v, prefix + (k,)))
  return paths


def layer_names(params: Tree) -> list[str]:
  """The '/'-joined names of all layers of `params`, in forward order with the head last.

  `params` is the 'params' collection (`variables['params']`) of a famus_jax model, or any tree
  with the same keys (e.g. its gradients). The order comes from the naming scheme (module
  docstring), not from the dict order; a name outside the scheme raises ValueError.
  """
  paths = leaf_layer_paths(params)
  paths.sort(key=lambda p: tuple(_name_key(k) for k in p))
  return ['/'.join(p) for p in paths]


def layer_names_in_call_order(model: nn.Module, variables: Tree,
                              x: jnp.ndarray, train: bool = False) -> list[str]:
  """The layer names of `variables['params']` in the order their leaf modules are first called.

  It traces `model.apply(variables, x, train=train)` abstractly (no FLOPs) while recording the
  module calls with `flax.linen.intercept_methods`. `variables` must hold 'params' (and
  'batch_stats' for models with BatchNorm); with `train=True` a 'dropout' rng is supplied. A layer
  that is never called raises ValueError.
  """
  wanted = {'/'.join(p) for p in leaf_layer_paths(variables['params'])}
  order: list[str] = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__':
      name = '/'.join(context.module.path)
      if name in wanted and name not in order:
        order.append(name)
    return next_fun(*args, **kwargs)

  def run(variables, x):
    with nn.intercept_methods(record):
      return model.apply(variables, x, train=train,
                         rngs={'dropout': jax.random.key(0)},
                         mutable=['batch_stats'] if train else False)

  jax.eval_shape(run, variables, x)
  missing = wanted.difference(order)
  if missing:
    raise ValueError(f'layers never called in the forward pass: {missing}')
  return order


def layer_of(path) -> str:
  """The name of the layer a parameter belongs to, e.g. 'stage1_block1_conv1'.

  `path` is a '/'-joined string ('stage1_block1_conv1/kernel') or a key path (a tuple of str or of
  the JAX path entries of `jax.tree_util.tree_flatten_with_path`). A leading collection name
  ('params', 'batch_stats') and the trailing leaf name ('kernel', 'bias', 'scale', 'mean', 'var')
  are dropped; a path that names no layer raises ValueError.
  """
  if isinstance(path, str):
    keys = path.split('/')
  else:
    keys = [getattr(k, 'key', getattr(k, 'name', k)) for k in path]
    keys = [str(k) for k in keys]
  if keys and keys[0] in COLLECTIONS:
    keys = keys[1:]
  if keys and keys[-1] in LEAF_NAMES:
    keys = keys[:-1]
  if not keys:
    raise ValueError(f'path {path!r} names no layer.')
  return '/'.join(keys)


def get_layer(tree: Tree, name: str) -> Tree:
  """The sub-dict of the layer `name` (a '/'-joined path) in `tree`."""
  for k in name.split('/'):
    tree = tree[k]
  return tree


def set_layer(tree: Tree, name: str, value: Any) -> dict:
  """A copy of `tree` with the layer `name` set to `value` (the dicts along the path are copied)."""
  keys = name.split('/')
  out = dict(tree)
  node = out
  for k in keys[:-1]:
    node[k] = dict(node.get(k, {}))
    node = node[k]
  node[keys[-1]] = value
  return out


def split_by_layers(tree: Tree, names: Sequence[str]) -> dict[str, Tree]:
  """{name: subtree of `tree`} for each layer name in `names`, in the order of `names`."""
  return {n: get_layer(tree, n) for n in names}


def merge_layers(layers: Mapping[str, Any], base: Tree | None = None) -> dict:
  """The inverse of `split_by_layers`: a nested dict built from `layers` = {name: subtree}.

  With `base`, the given layers replace those of a copy of `base`.
  """
  out = dict(base) if base is not None else {}
  for n, v in layers.items():
    out = set_layer(out, n, v)
  return out


def layer_kind(layer: Tree) -> str:
  """The kind of a layer's sub-dict: 'conv' (4-D kernel), 'dense' (2-D kernel) or 'norm'.

  'norm' is a layer with a scale and / or a bias but no kernel; anything else raises ValueError.
  """
  if 'kernel' in layer:
    ndim = len(layer['kernel'].shape)
    if ndim == 4:
      return 'conv'
    if ndim == 2:
      return 'dense'
    raise ValueError(f'unsupported kernel rank {ndim}')
  if 'scale' in layer or 'bias' in layer:
    return 'norm'
  raise ValueError(f'not a layer: keys {sorted(layer)}')


def pooled_axes(kernel_shape: Sequence[int]) -> tuple[int, ...]:
  """The axes Avg-Pool averages a kernel of `kernel_shape` over: all but the last (output) axis."""
  return tuple(range(len(kernel_shape) - 1))


def avg_pool_gradient(layer_grads: Tree) -> jnp.ndarray:
  """FaMUS's Avg-Pool (Eq. 8) of one layer's gradient, a 1-D vector.

  For a conv or dense layer it is concat(the kernel's mean over all but the last axis, bias): shape
  (D_out,), or (2 * D_out,) with a bias. For a norm layer it is concat(scale, bias). Its length is
  `layer_feature_size(layer_grads)`.
  """
  parts = []
  if 'kernel' in layer_grads:
    k = layer_grads['kernel']
    parts.append(jnp.mean(k, axis=pooled_axes(k.shape)))
  else:
    if 'scale' in layer_grads:
      parts.append(jnp.ravel(layer_grads['scale']))
  if 'bias' in layer_grads:
    parts.append(jnp.ravel(layer_grads['bias']))
  return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def layer_feature_size(layer: Tree) -> int:
  """The length of `avg_pool_gradient` for a layer (its params, or anything with their shapes)."""
  size = 0
  if 'kernel' in layer:
    size += layer['kernel'].shape[OUTPUT_CHANNEL_AXIS]
  elif 'scale' in layer:
    size += math.prod(layer['scale'].shape)
  if 'bias' in layer:
    size += math.prod(layer['bias'].shape)
  return size
