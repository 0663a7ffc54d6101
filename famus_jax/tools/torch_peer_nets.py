"""The PyTorch peer's networks: famus_jax's CIFAR networks in PyTorch, and the parameter mapping.

Networks (NCHW; layer names, widths, strides and BatchNorm placement as famus_jax.models):
  `ResNetCifar(depth 6n+2)`  3x3 stem (16), three stages of n BasicBlocks with 16 / 32 / 64
      channels (strides 1, 2, 2), option-A shortcut (subsample ::2 and zero-pad the
      channels, half each side), global average pooling, `head`.
  `WideResNet(depth 6n+4, k)`  pre-activation blocks with 16k / 32k / 64k channels, a 1x1
      conv shortcut where the shape changes, `final_bn`, pooling, `head` (no dropout).
  `WeightNet(h)`  MW-Net's meta model, Linear(1, h) - ReLU - Linear(h, 1) - sigmoid.
  `GateSampler(D)`  FaMUS's gate of one candidate tensor (the last stage's and `final_bn`'s
      tensors, `famus_candidates`), one per candidate (`build_samplers`).
Every parameterised layer is an attribute of the top module named as our flat Flax layer
(`stage3_block5_conv2`), so `load_flax_params` maps a famus_jax params / batch_stats tree
onto it: conv kernel (kh, kw, in, out) -> weight (out, in, kh, kw); dense kernel (in, out)
-> weight (out, in); BatchNorm scale / bias / mean / var -> weight / bias / running_mean /
running_var. BatchNorm: epsilon `famus_jax.models.common.BN_EPSILON` both sides; our
running-statistics decay (config.bn_momentum, 0.9) is torch's momentum 1 - decay (0.1)
(torch keeps the unbiased batch variance in running_var where Flax keeps the biased one; the
training-mode forward, the only one used here, uses the biased variance on both sides).

torch is imported at the top: import this module only when the peer is requested.
"""

import re
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from famus_jax import config as base_config
from famus_jax.famus.samplers import STD_EPS
from famus_jax.models.common import BN_EPSILON

SCHEMA = base_config.get_config()
BN_MOMENTUM = round(1.0 - SCHEMA.bn_momentum, 12)   # torch's convention: 1 - our decay
META_HIDDEN = SCHEMA.mwnet.hidden
SAMPLER_HIDDEN = SCHEMA.famus.sampler_hidden
GUMBEL_TEMPERATURE = SCHEMA.famus.temperature


# ---- networks ----------------------------------------------------------------------------
def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
  """Bias-free square conv, symmetric padding kernel // 2 (as `famus_jax.models.common`)."""
  return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def shortcut_a(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
  """Option A: x[:, :, ::s, ::s] and zero channels, extra // 2 before and the rest after."""
  if stride != 1:
    x = x[:, :, ::stride, ::stride]
  extra = out_channels - x.shape[1]
  if extra:
    x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
  return x


class ResNetCifar(nn.Module):
  """CIFAR ResNet-(6n+2), option-A shortcuts; (B, 3, H, W) -> (logits (B, C), features (B, 64))."""

  def __init__(self, num_classes: int, depth: int = 32):
    super().__init__()
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f'resnet depth must be 6n+2 with n >= 1, got {depth}')
    self.blocks = []   # (prefix, out channels, stride) in forward order
    self.stem_conv, self.stem_bn = _conv(3, 16, 3, 1), _bn(16)
    cin = 16
    for s, ch in enumerate((16, 32, 64), start=1):
      for b in range(1, (depth - 2) // 6 + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        p = f'stage{s}_block{b}_'
        setattr(self, p + 'conv1', _conv(cin, ch, 3, stride))
        setattr(self, p + 'bn1', _bn(ch))
        setattr(self, p + 'conv2', _conv(ch, ch, 3, 1))
        setattr(self, p + 'bn2', _bn(ch))
        self.blocks.append((p, ch, stride))
        cin = ch
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.stem_bn(self.stem_conv(x)))
    for p, ch, stride in self.blocks:
      out = F.relu(getattr(self, p + 'bn1')(getattr(self, p + 'conv1')(x)))
      out = getattr(self, p + 'bn2')(getattr(self, p + 'conv2')(out))
      if stride != 1 or x.shape[1] != ch:
        x = shortcut_a(x, ch, stride)
      x = F.relu(out + x)
    features = x.mean(dim=(2, 3))
    return self.head(features), features


class WideResNet(nn.Module):
  """WRN-(6n+4)-k with pre-activation blocks; (B, 3, H, W) -> (logits, features (B, 64k))."""

  def __init__(self, num_classes: int, depth: int = 28, widen_factor: int = 10):
    super().__init__()
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f'wide_resnet depth must be 6n+4 with n >= 1, got {depth}')
    k = widen_factor
    self.blocks = []   # (prefix, stride, has a shortcut conv)
    self.stem_conv = _conv(3, 16, 3, 1)
    cin = 16
    for s, ch in enumerate((16 * k, 32 * k, 64 * k), start=1):
      for b in range(1, (depth - 4) // 6 + 1):
        stride = 2 if (s > 1 and b == 1) else 1
        p = f'stage{s}_block{b}_'
        setattr(self, p + 'preact_bn1', _bn(cin))
        setattr(self, p + 'conv1', _conv(cin, ch, 3, stride))
        setattr(self, p + 'preact_bn2', _bn(ch))
        setattr(self, p + 'conv2', _conv(ch, ch, 3, 1))
        shortcut = stride != 1 or cin != ch
        if shortcut:
          setattr(self, p + 'shortcut_conv', _conv(cin, ch, 1, stride))
        self.blocks.append((p, shortcut))
        cin = ch
    self.final_bn = _bn(cin)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.stem_conv(x)
    for p, shortcut in self.blocks:
      act = F.relu(getattr(self, p + 'preact_bn1')(x))
      out = getattr(self, p + 'conv1')(act)
      out = F.relu(getattr(self, p + 'preact_bn2')(out))
      out = getattr(self, p + 'conv2')(out)
      x = out + (getattr(self, p + 'shortcut_conv')(act) if shortcut else x)
    features = F.relu(self.final_bn(x)).mean(dim=(2, 3))
    return self.head(features), features


class WeightNet(nn.Module):
  """MW-Net's meta model: losses (n,) -> weights sigmoid(fc2(relu(fc1(L)))) in (0, 1), (n,)."""

  def __init__(self, hidden: int = META_HIDDEN):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(1, hidden), nn.Linear(hidden, 1)

  def forward(self, losses):
    return torch.sigmoid(self.fc2(F.relu(self.fc1(losses[:, None]))))[:, 0]


def create_model(model_name: str, num_classes: int = 10) -> nn.Module:
  """'resnet<6n+2>' (e.g. resnet32, resnet8) or 'wrn-<6n+4>-<k>' (wrn-28-2, wrn-28-10)."""
  m = re.fullmatch(r'resnet(\d+)', model_name)
  if m:
    return ResNetCifar(num_classes, int(m.group(1)))
  m = re.fullmatch(r'wrn-(\d+)-(\d+)', model_name)
  if m:
    return WideResNet(num_classes, int(m.group(1)), int(m.group(2)))
  raise ValueError(f'the torch peer has no model {model_name!r}: use resnet<6n+2> or '
                   'wrn-<6n+4>-<k> (e.g. resnet32, wrn-28-2, wrn-28-10)')


# ---- FaMUS's gate samplers on these networks ----------------------------------------------
class GateSampler(nn.Module):
  """One tensor's gate: x (D,) -> r, a hard {0, 1} sample with a straight-through gradient.

  x is standardised, (x - mean) / (std + 1e-9) (unbiased std, as torch's `Tensor.std` in
  the reference code), then Linear(D, 128) - PReLU - Linear(128, 128) - PReLU -
  Linear(128, 2) and `gumbel_softmax(hard=True, tau=5)`; r is the 'on' entry.
  """

  def __init__(self, size: int, hidden: int = SAMPLER_HIDDEN):
    super().__init__()
    self.fc1, self.act1 = nn.Linear(size, hidden), nn.PReLU()
    self.fc2, self.act2 = nn.Linear(hidden, hidden), nn.PReLU()
    self.out = nn.Linear(hidden, 2)

  def forward(self, x):
    x = (x - x.mean()) / (x.std() + STD_EPS)
    h = self.act2(self.fc2(self.act1(self.fc1(x[None]))))
    return F.gumbel_softmax(self.out(h), tau=GUMBEL_TEMPERATURE, hard=True)[0, 1]


def famus_candidates(model: nn.Module) -> list:
  """Parameter names with a sampler: the last stage's tensors and `final_bn`'s, in order."""
  names = [n for n, _ in model.named_parameters()]
  last = max(int(m.group(1)) for m in (re.match(r'stage(\d+)_', n) for n in names) if m)
  return [n for n in names if n.startswith(f'stage{last}_') or n.startswith('final_bn.')]


def channel_sums(grad: torch.Tensor) -> torch.Tensor:
  """Per-output-channel sum of a gradient: conv (O, I, h, w) / dense (O, I) -> (O,)."""
  return grad.sum(dim=tuple(range(1, grad.dim()))) if grad.dim() > 1 else grad


def build_samplers(model: nn.Module) -> nn.ModuleDict:
  """{candidate index: GateSampler(D_out)} for every `famus_candidates` tensor."""
  params = dict(model.named_parameters())
  return nn.ModuleDict({str(i): GateSampler(params[n].shape[0])
                        for i, n in enumerate(famus_candidates(model))})


# ---- famus_jax <-> torch parameter layout -----------------------------------------------
def _to_torch_layout(module: nn.Module, leaf: str, value: np.ndarray) -> tuple:
  """(torch attribute name, array in torch layout) of one Flax leaf of `module`."""
  if leaf == 'kernel':
    return 'weight', (value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T)
  if leaf == 'scale':
    return 'weight', value
  if leaf in ('mean', 'var'):
    return 'running_' + leaf, value
  if leaf == 'bias':
    return 'bias', value
  raise KeyError(f'unknown Flax leaf {leaf!r} of {type(module).__name__}')


def load_flax_params(torch_model: nn.Module, params: Mapping,
                     batch_stats: Optional[Mapping] = None) -> None:
  """Copy a famus_jax variables tree into `torch_model` in place.

  params: {layer: {'kernel' | 'scale' | 'bias': array}}; batch_stats: {layer: {'mean',
  'var'}} (or None for a model without BatchNorm). Layouts: conv kernel HWIO -> OIHW, dense
  (in, out) -> (out, in); the values are cast to the torch tensors' dtype. Raises KeyError
  when a torch parameter or running statistic is left unset or a Flax layer is unknown.
  """
  targets = dict(torch_model.named_parameters())
  targets.update({k: v for k, v in torch_model.named_buffers()
                  if not k.endswith('num_batches_tracked')})
  done = set()
  for tree in (params, batch_stats or {}):
    for layer, leaves in tree.items():
      module = getattr(torch_model, layer, None)
      if not isinstance(module, nn.Module):
        raise KeyError(f'the torch model has no layer {layer!r}')
      for leaf, value in leaves.items():
        attr, array = _to_torch_layout(module, leaf, np.asarray(value))
        name = f'{layer}.{attr}'
        target = targets[name]
        if tuple(target.shape) != array.shape:
          raise ValueError(f'{name}: torch shape {tuple(target.shape)} != {array.shape}')
        with torch.no_grad():
          target.copy_(torch.from_numpy(np.array(array, copy=True)).to(target.dtype))
        done.add(name)
  missing = sorted(set(targets) - done)
  if missing:
    raise KeyError(f'not set from the Flax tree: {missing}')


def to_flax_tree(torch_model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict:
  """{'layer.weight': tensor} (parameters or their gradients) -> {layer: {leaf: np array}}.

  The inverse layout of `load_flax_params`: a conv weight OIHW -> HWIO, a Linear weight
  (out, in) -> (in, out), a BatchNorm weight -> 'scale'.
  """
  out = {}
  for name, value in tensors.items():
    layer, attr = name.rsplit('.', 1)
    array = value.detach().cpu().numpy()
    module = getattr(torch_model, layer)
    if attr == 'weight' and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
      leaf = 'scale'
    elif attr == 'weight':
      leaf, array = 'kernel', (array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T)
    elif attr.startswith('running_'):
      leaf = attr[len('running_'):]
    else:
      leaf = attr
    out.setdefault(layer, {})[leaf] = array
  return out
