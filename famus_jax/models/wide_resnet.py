"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", 2016).

For depth d = 6n+4 and widening factor k the network is a 3x3 stem conv (16 channels), three
stages of n pre-activation blocks with 16k / 32k / 64k channels (strides 1, 2, 2; a 1x1 conv
shortcut where the shape changes; dropout between the two convs of a block), then BN-ReLU, global
average pooling and the linear `head`. WRN-28-10 has 36,479,194 parameters for 10 classes.

The layer names (flat, in call order) are `stem_conv`, per block
`stage{s}_block{b}_preact_bn1, _conv1, _preact_bn2, _conv2[, _shortcut_conv]`, then `final_bn` and
`head`. It maps x (B, H, W, C) to logits (B, num_classes); the features are (B, 64k).
"""

import flax.linen as nn

from famus_jax.models import common


def num_blocks(depth) -> int:
  """The number n of blocks per stage for depth 6n+4 (any other depth raises ConfigError)."""
  return common.blocks_per_stage('wide_resnet', depth, offset=4,
                                 layers_per_block=2,
                                 examples='16, 22, 28, 40')


class WideResNet(nn.Module):
  """WRN-`depth`-`widen_factor` with `num_classes` outputs (see the module docstring).

  `dropout` is the rate between the two convs of each block (in [0, 1); it draws from the 'dropout'
  rng when training), `bn_momentum` the decay of the BatchNorm running statistics.
  """
  num_classes: int
  depth: int = 28
  widen_factor: int = 10
  dropout: float = 0.0
  bn_momentum: float = 0.9

  def __post_init__(self):
    num_blocks(self.depth)
    common.check_positive_int(self.widen_factor, 'width', 'wide_resnet')
    common.check_positive_int(self.num_classes, 'num_classes', 'wide_resnet')
    common.check_dropout(self.dropout, 'wide_resnet')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool, return_features: bool = False):
    k = self.widen_factor
    x = common.conv(16, 3, 1, 'stem_conv')(x)
    for s, ch in enumerate((16 * k, 32 * k, 64 * k), start=1):
      for b in range(1, num_blocks(self.depth) + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        x = common.preact_block(x, ch, stride, f'stage{s}_block{b}_', train,
                                self.bn_momentum, self.dropout)
    x = nn.relu(common.batch_norm(train, self.bn_momentum, 'final_bn')(x))
    features = common.global_avg_pool(x)
    logits = common.head(self.num_classes)(features)
    return (logits, features) if return_features else logits
