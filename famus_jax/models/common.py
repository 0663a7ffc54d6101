"""Building blocks shared by the models: convolutions, BatchNorm, the head, residual blocks.

All models are NHWC and float32, and each creates every parameterised layer directly in its
top-level `__call__` under an explicit name. Their `params` dict is therefore one level deep (a
layer name maps to {'kernel' | 'bias' | 'scale': array}), and a "layer" is a top-level key; the
naming scheme is described in `famus_jax.models.layers`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from famus_jax.errors import ConfigError

# He et al. (2015) initialisation for ReLU networks, fan-out as in the reference PyTorch ResNet and
# WRN code.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

BN_EPSILON = 1e-5


def materialize(x: jnp.ndarray) -> jnp.ndarray:
  """`x` itself, bit for bit and with the same shape and dtype, computed once into its own buffer.

  The result is `x / one`, where `one` is exactly 1.0 but is computed at run time from the bits of
  one element of `x`, so that XLA cannot fold it away. Since `x / 1.0 == x` in IEEE arithmetic
  (NaN, inf and -0 included), the value, every derivative and every transpose are unchanged; an
  empty `x` is returned as is.

  The reason is XLA:CPU's fusion. A float division counts as an "expensive" op, which XLA never
  duplicates into several consumers. Without it, XLA:CPU re-derives the post-activation residual
  stream `relu(bn(conv) + x)` of every earlier block inside each of its consumers (quadratic in
  depth), in particular inside the layout transposes that feed each kernel-gradient convolution,
  where the recomputed chain is read with a cache-hostile stride: on ResNet-32 (batch 100, 2 CPU
  cores) those transposes took ~60% of a forward+backward step. `optimization_barrier` does not
  help, because XLA:CPU removes it before fusion. `scripts/profile_backward.py` measures the effect.

  It is a CPU workaround, so it applies only when the default backend (where the traced program
  runs) is the CPU; elsewhere `x` is returned untouched (no division in the program at all). Not
  measured on a GPU yet: `scripts/gpu_check.sh` times the GPU step without it.
  """
  if x.size == 0 or jax.default_backend() != 'cpu':
    return x
  ref = lax.stop_gradient(x).reshape(-1)[0].astype(jnp.float32)
  bits = lax.bitcast_convert_type(ref, jnp.int32)
  # (sign bit, 0 or 1) & 2 == 0 for every input, NaN included.
  zero = lax.shift_right_logical(bits, jnp.int32(31)) & jnp.int32(2)
  return x / (1 + zero).astype(x.dtype)


class Conv(nn.Conv):
  """`flax.linen.Conv` applied to `materialize(inputs)`.

  It has the same parameters (`kernel`, and `bias` if used), initialisation, outputs and
  derivatives as `nn.Conv`; only XLA's fusion decisions change.
  """

  def __call__(self, inputs):
    return super().__call__(materialize(inputs))


def conv(features: int, kernel: int, stride: int, name: str,
         materialize_input: bool = True) -> nn.Conv:
  """A bias-free `kernel` x `kernel` conv with `features` outputs, stride `stride`, named `name`.

  The padding is PyTorch-style and symmetric (`kernel // 2` on each side), so for odd kernels the
  output spatial size is `ceil(H / stride)`, which matches the strided subsampling
  `x[:, ::stride, ::stride]` of option-A shortcuts. The input is materialised first (see
  `materialize`) unless `materialize_input` is False, which gives a plain `nn.Conv` (kept for
  comparisons).
  """
  pad = kernel // 2
  cls = Conv if materialize_input else nn.Conv
  return cls(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=False,
      kernel_init=conv_init, name=name)


def batch_norm(train: bool, momentum: float, name: str) -> nn.BatchNorm:
  """BatchNorm over the channel axis, named `name`: batch statistics if `train`, else running ones.

  `momentum` is the decay of the running statistics; epsilon is `BN_EPSILON`.
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON,
      name=name)


def head(num_classes: int) -> nn.Dense:
  """The final linear classifier (D -> `num_classes`, with bias), always named `head`."""
  return nn.Dense(num_classes, name='head')


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  """The mean over the spatial axes: (B, H, W, C) -> (B, C)."""
  return jnp.mean(x, axis=(1, 2))


def blocks_per_stage(model: str, depth: Any, offset: int, layers_per_block: int,
                     examples: str) -> int:
  """The number n of residual blocks per stage of `model` for a `depth` of the form step*n + offset.

  step = 3 * `layers_per_block` (6 for two convs per block). A depth that is not an integer of that
  form with n >= 1 raises ConfigError naming `depth`, the allowed form and the `examples`.
  """
  step = 3 * layers_per_block
  if (isinstance(depth, bool) or not isinstance(depth, int) or
      depth < step + offset or (depth - offset) % step):
    raise ConfigError(
        f'depth={depth!r} is invalid for model {model!r}: depth must be '
        f'{step}n+{offset} with integer n >= 1 (e.g. {examples}).')
  return (depth - offset) // step


def check_positive_int(value: Any, field: str, model: str) -> None:
  """Raises ConfigError naming `field` and `model` unless `value` is an int >= 1 (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(
        f'{field}={value!r} is invalid for model {model!r}: must be an '
        'integer >= 1.')


def check_dropout(rate: Any, model: str) -> None:
  """Raises ConfigError naming `model` unless the dropout `rate` is a number in [0, 1)."""
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
      0.0 <= rate < 1.0):
    raise ConfigError(
        f'dropout={rate!r} is invalid for model {model!r}: must be in [0, 1).')


def preact_block(x: jnp.ndarray, out_channels: int, stride: int, prefix: str,
                 train: bool, momentum: float,
                 dropout: float = 0.0) -> jnp.ndarray:
  """A pre-activation residual block (He et al., "Identity Mappings", 2016) applied to x.

  It computes BN-ReLU-conv3x3(stride) - BN-ReLU-[dropout]-conv3x3 and adds the identity or, when
  the shape changes, a 1x1 conv (with the stride) of the first pre-activation. It creates the
  layers `{prefix}preact_bn1, conv1, preact_bn2, conv2[, shortcut_conv]` in that call order, and
  maps x (B, H, W, C) to (B, ceil(H / stride), ceil(W / stride), out_channels). Dropout draws from
  the 'dropout' rng, only if `train` and `dropout` > 0.
  """
  act = nn.relu(batch_norm(train, momentum, prefix + 'preact_bn1')(x))
  out = conv(out_channels, 3, stride, prefix + 'conv1')(act)
  out = nn.relu(batch_norm(train, momentum, prefix + 'preact_bn2')(out))
  if dropout > 0.0 and train:
    out = nn.Dropout(rate=dropout, deterministic=False,
                     name=prefix + 'dropout')(out)
  out = conv(out_channels, 3, 1, prefix + 'conv2')(out)
  if stride != 1 or x.shape[-1] != out_channels:
    x = conv(out_channels, 1, stride, prefix + 'shortcut_conv')(act)
  return out + x
