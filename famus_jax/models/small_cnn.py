"""A tiny CNN for tests and smoke runs.

It is conv3x3(width)-BN-ReLU, conv3x3(2 * width, stride 2)-BN-ReLU, global average pooling and the
linear `head`. It has BatchNorm on purpose: the meta-gradient tests need the batch-statistics path.

The layer names (flat, in call order) are `stem_conv, stem_bn, stage1_block1_conv1,
stage1_block1_bn1, head`. It maps x (B, H, W, C) to logits (B, num_classes); the features are
(B, 2 * width).
"""

import flax.linen as nn

from famus_jax.models import common


class SmallCNN(nn.Module):
  """Two conv-BN-ReLU layers and a linear head with `num_classes` outputs (module docstring).

  `width` is the channel count of the first conv, `bn_momentum` the decay of the BatchNorm running
  statistics.
  """
  num_classes: int
  width: int = 8
  bn_momentum: float = 0.9

  def __post_init__(self):
    common.check_positive_int(self.width, 'width', 'small_cnn')
    common.check_positive_int(self.num_classes, 'num_classes', 'small_cnn')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool, return_features: bool = False):
    bn = lambda name: common.batch_norm(train, self.bn_momentum, name)
    x = common.conv(self.width, 3, 1, 'stem_conv')(x)
    x = nn.relu(bn('stem_bn')(x))
    x = common.conv(2 * self.width, 3, 2, 'stage1_block1_conv1')(x)
    x = nn.relu(bn('stage1_block1_bn1')(x))
    features = common.global_avg_pool(x)
    logits = common.head(self.num_classes)(features)
    return (logits, features) if return_features else logits
