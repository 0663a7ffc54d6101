"""The classifiers (Flax linen, NHWC) and the layer-level views of their parameters.

Every model is called as `model.apply(variables, x, train, return_features=False)` with x float32
(B, H, W, C). It returns the logits (B, num_classes), or the pair (logits, features) when
`return_features` is set, where features (B, D) are the inputs of the final Dense layer `head`.
The variables are 'params' and 'batch_stats'. With `train=True` BatchNorm normalises with the
batch statistics (apply with `mutable=['batch_stats']` to get the updated running statistics),
and a Wide ResNet with dropout > 0 draws from the 'dropout' rng.
"""

import flax.linen as nn

from famus_jax.errors import ConfigError
from famus_jax.models.layers import (
    avg_pool_gradient, get_layer, layer_feature_size, layer_kind, layer_names,
    layer_names_in_call_order, layer_of, merge_layers, pooled_axes, set_layer,
    split_by_layers)
from famus_jax.models.preact_resnet import PreActResNet18
from famus_jax.models.resnet_cifar import ResNetCifar
from famus_jax.models.resnet_imagenet import ResNet50
from famus_jax.models.small_cnn import SmallCNN
from famus_jax.models.wide_resnet import WideResNet

# custom: a Flax module handed to the Python API (famus_jax/api.py), not built from the config.
MODELS = ('resnet', 'wide_resnet', 'preact_resnet18', 'small_cnn', 'resnet50', 'custom')

__all__ = [
    'MODELS', 'create_model', 'ResNetCifar', 'WideResNet', 'PreActResNet18', 'ResNet50',
    'SmallCNN', 'layer_names', 'layer_names_in_call_order', 'layer_of',
    'get_layer', 'set_layer', 'split_by_layers', 'merge_layers', 'layer_kind',
    'pooled_axes', 'avg_pool_gradient', 'layer_feature_size',
]


def create_model(config, num_classes: int) -> nn.Module:
  """The untrained Flax module named by `config.model`, with `num_classes` outputs.

  It reads config.model, config.depth (6n+2 for 'resnet', 6n+4 for 'wide_resnet'), config.width
  (the widening factor of 'wide_resnet', the channels of 'small_cnn'), config.base_width (the
  first-stage width of 'resnet50'), config.dropout ('wide_resnet'
  only; it must be 0 for the other models) and config.bn_momentum (in [0, 1]). An invalid value
  raises ConfigError naming the offending field.
  """
  name = config.model
  dropout = config.dropout
  if name not in MODELS:
    raise ConfigError(
        f'model={name!r} is unknown; allowed models: {", ".join(MODELS)}.')
  if name == 'custom':
    raise ConfigError("model='custom' names a Flax module handed to the Python API (famus_jax.fit, "
                      'famus_jax.Learner); a config-file run needs one of '
                      f'{", ".join(m for m in MODELS if m != "custom")}')
  if name != 'wide_resnet' and dropout:
    raise ConfigError(f'dropout={dropout!r} is only supported by model '
                      f"'wide_resnet', not {name!r}; set dropout = 0.0.")
  momentum = config.bn_momentum
  if isinstance(momentum, bool) or not isinstance(
      momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
    raise ConfigError(f'bn_momentum={momentum!r} is invalid: must be in '
                      '[0, 1].')
  if name == 'resnet':
    return ResNetCifar(num_classes, depth=config.depth, bn_momentum=momentum)
  if name == 'wide_resnet':
    return WideResNet(num_classes, depth=config.depth,
                      widen_factor=config.width, dropout=dropout,
                      bn_momentum=momentum)
  if name == 'resnet50':
    return ResNet50(num_classes, width=config.base_width, bn_momentum=momentum)
  if name == 'preact_resnet18':
    return PreActResNet18(num_classes, bn_momentum=momentum)
  return SmallCNN(num_classes, width=config.width, bn_momentum=momentum)
