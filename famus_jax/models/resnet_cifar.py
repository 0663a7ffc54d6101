"""CIFAR ResNet (He et al., "Deep Residual Learning", CVPR 2016, Sec. 4.2).

For depth 6n+2 the network is a 3x3 stem conv (16 channels) with BatchNorm, three stages of n
BasicBlocks with 16 / 32 / 64 channels (strides 1, 2, 2), global average pooling and the linear
`head`. With `shortcut='A'` and n = 5 it is the ResNet-32 of MW-Net (Shu et al., 2019).

Where the shape changes, the shortcut is either

  'A'  parameter-free: subsample `x[:, ::s, ::s]` and zero-pad the channels (half on each side),
       as in the paper's CIFAR experiments and in MW-Net; or
  'B'  a 1x1 conv (stride s) followed by BatchNorm.

The layer names (flat, in call order) are `stem_conv, stem_bn`, then per block
`stage{s}_block{b}_conv1, _bn1, _conv2, _bn2[, _shortcut_conv, _shortcut_bn]`, and `head`. It maps
x (B, H, W, C) to logits (B, num_classes); the features are (B, 64).
"""

import flax.linen as nn
import jax.numpy as jnp

from famus_jax.errors import ConfigError
from famus_jax.models import common

STAGE_CHANNELS = (16, 32, 64)
SHORTCUTS = ('A', 'B')


def num_blocks(depth) -> int:
  """The number n of blocks per stage for depth 6n+2 (any other depth raises ConfigError)."""
  return common.blocks_per_stage('resnet', depth, offset=2, layers_per_block=2,
                                 examples='20, 32, 44, 56, 110')


def shortcut_a(x: jnp.ndarray, out_channels: int, stride: int) -> jnp.ndarray:
  """Option A: x (B, H, W, C) strided-subsampled and zero-padded to `out_channels` channels.

  The output is (B, ceil(H / stride), ceil(W / stride), out_channels); the extra channels are
  split between both sides (the odd one at the end).
  """
  if stride != 1:
    x = x[:, ::stride, ::stride, :]
  extra = out_channels - x.shape[-1]
  if extra:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  return x


class ResNetCifar(nn.Module):
  """CIFAR ResNet-(6n+2) with BasicBlocks and `num_classes` outputs (see the module docstring).

  `depth` is 6n+2, `shortcut` 'A' or 'B', and `bn_momentum` the decay of the BatchNorm running
  statistics.
  """
  num_classes: int
  depth: int = 32
  shortcut: str = 'A'
  bn_momentum: float = 0.9

  def __post_init__(self):
    num_blocks(self.depth)
    common.check_positive_int(self.num_classes, 'num_classes', 'resnet')
    if self.shortcut not in SHORTCUTS:
      raise ConfigError(f'shortcut={self.shortcut!r} is invalid for model '
                        f"'resnet': must be one of {SHORTCUTS}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool, return_features: bool = False):
    bn = lambda name: common.batch_norm(train, self.bn_momentum, name)
    x = common.conv(STAGE_CHANNELS[0], 3, 1, 'stem_conv')(x)
    x = nn.relu(bn('stem_bn')(x))
    in_ch = STAGE_CHANNELS[0]
    for s, ch in enumerate(STAGE_CHANNELS, start=1):
      for b in range(1, num_blocks(self.depth) + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        p = f'stage{s}_block{b}_'
        out = common.conv(ch, 3, stride, p + 'conv1')(x)
        out = nn.relu(bn(p + 'bn1')(out))
        out = common.conv(ch, 3, 1, p + 'conv2')(out)
        out = bn(p + 'bn2')(out)
        if stride != 1 or in_ch != ch:
          if self.shortcut == 'A':
            x = shortcut_a(x, ch, stride)
          else:
            x = common.conv(ch, 1, stride, p + 'shortcut_conv')(x)
            x = bn(p + 'shortcut_bn')(x)
        x = nn.relu(out + x)
        in_ch = ch
    features = common.global_avg_pool(x)
    logits = common.head(self.num_classes)(features)
    return (logits, features) if return_features else logits
