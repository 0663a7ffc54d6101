"""PreAct ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016), CIFAR.

The network is a 3x3 stem conv (64 channels, stride 1, no BatchNorm: the first block's
pre-activation normalises it), four stages of two pre-activation blocks with 64 / 128 / 256 / 512
channels (strides 1, 2, 2, 2; a 1x1 conv shortcut where the shape changes), the final BN-ReLU that
the pre-activation design needs, global average pooling and the linear `head`. It has 11,172,170
parameters for 10 classes (11,171,146 plus the 1,024 of `final_bn`).

The layer names (flat, in call order) are `stem_conv`, per block
`stage{s}_block{b}_preact_bn1, _conv1, _preact_bn2, _conv2[, _shortcut_conv]`, then `final_bn` and
`head`. It maps x (B, H, W, C) to logits (B, num_classes); the features are (B, 512).
"""

import flax.linen as nn

from famus_jax.models import common

STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS = (2, 2, 2, 2)


class PreActResNet18(nn.Module):
  """PreAct ResNet-18 with `num_classes` outputs (see the module docstring).

  `bn_momentum` is the decay of the BatchNorm running statistics.
  """
  num_classes: int
  bn_momentum: float = 0.9

  def __post_init__(self):
    common.check_positive_int(self.num_classes, 'num_classes',
                              'preact_resnet18')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool, return_features: bool = False):
    x = common.conv(STAGE_CHANNELS[0], 3, 1, 'stem_conv')(x)
    for s, (ch, n) in enumerate(zip(STAGE_CHANNELS, BLOCKS), start=1):
      for b in range(1, n + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        x = common.preact_block(x, ch, stride, f'stage{s}_block{b}_', train,
                                self.bn_momentum)
    x = nn.relu(common.batch_norm(train, self.bn_momentum, 'final_bn')(x))
    features = common.global_avg_pool(x)
    logits = common.head(self.num_classes)(features)
    return (logits, features) if return_features else logits
