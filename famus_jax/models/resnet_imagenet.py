"""ResNet-50 for ImageNet-sized images (He et al., "Deep Residual Learning", CVPR 2016, Table 1).

The layout is torchvision's `resnet50` (v1.5: the stride of a downsampling block sits on its 3x3
conv): a 7x7 stride-2 stem conv with BatchNorm and ReLU, a 3x3 stride-2 max pool, four stages of
3 / 4 / 6 / 3 Bottleneck blocks, global average pooling and the linear `head`. A Bottleneck block
of width c computes conv1x1(c)-BN-ReLU, conv3x3(c, stride)-BN-ReLU, conv1x1(4c)-BN, adds the
identity or, where the shape changes, a 1x1 conv (with the stride) and BatchNorm of its input, and
applies ReLU. The stage widths are w, 2w, 4w, 8w with `width` w = 64 in ResNet-50; a smaller w
gives the same network, narrower (tests). For 1000 classes and w = 64 it has 25,557,032
parameters, torchvision's count.

Layer names follow the famus_jax scheme (`famus_jax.models.layers`) in call order; torchvision's
name of each layer (`TORCHVISION_NAMES`, `torchvision_name`):

  stem_conv, stem_bn                        conv1, bn1
  stage{s}_block{b}_conv{k}, _bn{k}         layer{s}.{b-1}.conv{k}, .bn{k}      (k = 1, 2, 3)
  stage{s}_block1_shortcut_conv, _bn        layer{s}.0.downsample.0, .downsample.1
  head                                      fc

It maps x (B, H, W, C) to logits (B, num_classes); the features are (B, 32 w). Any H, W >= 32
works (the stem and the three strided stages subsample by 32 in all, with ceil).
"""

import flax.linen as nn
import numpy as np

from famus_jax.models import common

BLOCKS = (3, 4, 6, 3)
EXPANSION = 4  # output channels of a Bottleneck block / its width
STEM_KERNEL = 7
POOL_WINDOW = 3

# famus_jax sub-layer suffix -> torchvision attribute path inside a Bottleneck block.
_BLOCK_TORCHVISION = {'conv1': 'conv1', 'bn1': 'bn1', 'conv2': 'conv2', 'bn2': 'bn2',
                      'conv3': 'conv3', 'bn3': 'bn3', 'shortcut_conv': 'downsample.0',
                      'shortcut_bn': 'downsample.1'}
TORCHVISION_NAMES = {'stem_conv': 'conv1', 'stem_bn': 'bn1', 'head': 'fc'}


def torchvision_name(name: str) -> str:
  """torchvision's module name of the famus_jax layer `name` ('stage2_block1_conv3' ->
  'layer2.0.conv3'); a name outside ResNet-50's layers raises ValueError."""
  if name in TORCHVISION_NAMES:
    return TORCHVISION_NAMES[name]
  parts = name.split('_', 2)
  if (len(parts) == 3 and parts[0].startswith('stage') and parts[1].startswith('block')
      and parts[2] in _BLOCK_TORCHVISION):
    stage, block = int(parts[0][len('stage'):]), int(parts[1][len('block'):])
    return f'layer{stage}.{block - 1}.{_BLOCK_TORCHVISION[parts[2]]}'
  raise ValueError(f'{name!r} is not a layer name of ResNet-50')


def variables_from_torchvision(state_dict) -> dict:
  """{'params', 'batch_stats'} of `ResNet50` from a torchvision ResNet-50 `state_dict`.

  `state_dict` maps torchvision's names ('layer1.0.conv1.weight', ...) to arrays (numpy, or
  anything `np.asarray` takes: convert torch tensors with `.numpy()`). Conv weights (O, I, kh, kw)
  become Flax kernels (kh, kw, I, O), the fc weight (O, I) a kernel (I, O); BatchNorm weight /
  bias / running_mean / running_var become scale / bias and the statistics mean / var;
  `num_batches_tracked` is dropped. The layers are the torchvision names of the famus_jax layers,
  so a state dict of another network raises KeyError naming the missing entry.
  """
  params, stats = {}, {}
  for name in resnet50_layer_names():
    tv_name = torchvision_name(name)
    weight = np.asarray(state_dict[f'{tv_name}.weight'])
    if name.rsplit('_', 1)[-1].startswith('bn'):  # stem_bn, ..._bn1/2/3, ..._shortcut_bn
      params[name] = {'scale': weight, 'bias': np.asarray(state_dict[f'{tv_name}.bias'])}
      stats[name] = {'mean': np.asarray(state_dict[f'{tv_name}.running_mean']),
                     'var': np.asarray(state_dict[f'{tv_name}.running_var'])}
    elif name == 'head':
      params[name] = {'kernel': weight.T, 'bias': np.asarray(state_dict[f'{tv_name}.bias'])}
    else:
      params[name] = {'kernel': weight.transpose(2, 3, 1, 0)}
  return {'params': params, 'batch_stats': stats}


def resnet50_layer_names() -> list:
  """The famus_jax names of ResNet-50's layers (stage sizes `BLOCKS`), in call order."""
  names = ['stem_conv', 'stem_bn']
  for s, n in enumerate(BLOCKS, start=1):
    for b in range(1, n + 1):
      subs = ['conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3']
      if b == 1:
        subs += ['shortcut_conv', 'shortcut_bn']
      names += [f'stage{s}_block{b}_{sub}' for sub in subs]
  return names + ['head']


class ResNet50(nn.Module):
  """ResNet-50 (torchvision layout) with `num_classes` outputs (see the module docstring).

  `width` is the first stage's Bottleneck width (64 in ResNet-50; the stem has as many channels)
  and `bn_momentum` the decay of the BatchNorm running statistics.
  """
  num_classes: int
  width: int = 64
  bn_momentum: float = 0.9

  def __post_init__(self):
    common.check_positive_int(self.num_classes, 'num_classes', 'resnet50')
    common.check_positive_int(self.width, 'base_width', 'resnet50')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool, return_features: bool = False):
    bn = lambda name: common.batch_norm(train, self.bn_momentum, name)
    x = common.conv(self.width, STEM_KERNEL, 2, 'stem_conv')(x)
    x = nn.relu(bn('stem_bn')(x))
    pad = POOL_WINDOW // 2
    x = nn.max_pool(x, (POOL_WINDOW, POOL_WINDOW), strides=(2, 2),
                    padding=((pad, pad), (pad, pad)))
    for s, n in enumerate(BLOCKS, start=1):
      width = self.width * 2 ** (s - 1)
      for b in range(1, n + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        p = f'stage{s}_block{b}_'
        out = nn.relu(bn(p + 'bn1')(common.conv(width, 1, 1, p + 'conv1')(x)))
        out = nn.relu(bn(p + 'bn2')(common.conv(width, 3, stride, p + 'conv2')(out)))
        out = bn(p + 'bn3')(common.conv(width * EXPANSION, 1, 1, p + 'conv3')(out))
        if b == 1:
          x = bn(p + 'shortcut_bn')(common.conv(width * EXPANSION, 1, stride,
                                                p + 'shortcut_conv')(x))
        x = nn.relu(out + x)
    features = common.global_avg_pool(x)
    logits = common.head(self.num_classes)(features)
    return (logits, features) if return_features else logits
