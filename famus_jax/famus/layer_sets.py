"""Which layers FaMUS may sample, and how they are grouped into compiled variants.

Everything here is static (Python, at trace time) and works on the model's own
layer names (`famus_jax.models.layer_names`, forward order, head last), never
on positions.

Candidates (the layers that have a gradient sampler) are chosen by
`config.famus.candidates`:

  'all'        every parameterised layer (conv, BatchNorm, head): the paper.
  'reference'  the layers of the last residual stage (and a final BatchNorm if
               the model has one), each its own candidate, with the head always
               on: the public reference code.
  otherwise    comma-separated regular expressions (`re.fullmatch` on a layer
               name), e.g. 'stage3_.*,head'.

`config.famus.always_on` (regexes, '' = none) adds layers that are in every
estimate without a sampler; 'reference' adds 'head' to it.

The default is 'reference'. The cost of a step is set by its lowest active
layer, and with 'all' the samplers (K = 4 of 63 layers in a ResNet-32) keep
drawing low layers for hundreds of steps: measured on ResNet-32 after 40
settling steps, 'all' ran at 1.05x the exact MW-Net step, 'reference' at
0.67x (the paper's timings come from the reference code, which samples the
last stage only).

Floor buckets. The work of one step depends on the lowest active layer (the
*floor*): the validation cotangent and the JVP tangent only flow from the head
down to it. Each compiled step variant has a static floor; the layers are
grouped ('layer': each layer, 'block': stem / each residual block / final_bn /
head, 'stage': stem / each stage / final_bn / head) and a variant's floor is the
first layer of a group. Bucket b covers every active set whose lowest layer is
in group b or above.
"""

import dataclasses
import re
from typing import Sequence

from famus_jax.errors import ConfigError

CANDIDATE_PRESETS = ('all', 'reference')
FLOOR_GRANULARITIES = ('layer', 'block', 'stage')
_BLOCK = re.compile(r'^(stage(\d+))_block(\d+)_')


def split_patterns(text: str) -> list:
  """'a, b.*' -> ['a', 'b.*'] (empty items dropped)."""
  return [p.strip() for p in text.split(',') if p.strip()]


def match_layers(names: Sequence[str], patterns: Sequence[str], field: str) -> list:
  """Layers (in `names` order) that fully match one of `patterns`.

  Raises ConfigError naming `field` for an invalid regex or one that matches
  nothing (a typo would otherwise silently give an empty set).
  """
  out = []
  for pattern in patterns:
    try:
      compiled = re.compile(pattern)
    except re.error as err:
      raise ConfigError(f'config.{field}: {pattern!r} is not a valid regular expression '
                        f'({err})') from err
    hits = [n for n in names if compiled.fullmatch(n)]
    if not hits:
      raise ConfigError(f'config.{field}: {pattern!r} matches no layer of the model; layers '
                        f'are {list(names)}')
    out.extend(h for h in hits if h not in out)
  return [n for n in names if n in out]


def block_of(name: str):
  """'stage2_block3_conv1' -> 'stage2_block3'; None outside residual blocks."""
  m = _BLOCK.match(name)
  return f'{m.group(1)}_block{m.group(3)}' if m else None


def stage_of(name: str):
  m = _BLOCK.match(name)
  return m.group(1) if m else None


def residual_blocks(names: Sequence[str]) -> list:
  """Residual block prefixes in forward order ('stage1_block1', ...)."""
  out = []
  for n in names:
    b = block_of(n)
    if b is not None and b not in out:
      out.append(b)
  return out


def group_of(name: str, granularity: str) -> str:
  if granularity == 'layer':
    return name
  if name.startswith('stem_'):
    return 'stem'
  inner = block_of(name) if granularity == 'block' else stage_of(name)
  return inner if inner is not None else name


@dataclasses.dataclass(frozen=True)
class LayerSets:
  """Static layer bookkeeping of one model under one FaMUS config.

  names: every layer, forward order (head last).
  candidates: layers with a sampler (forward order), subset of names.
  always_on: layers in every estimate.
  bucket_floors: for each floor bucket, the index (into names) of its first layer;
    increasing, bucket_floors[0] == 0.
  """
  names: tuple
  candidates: tuple
  always_on: tuple
  bucket_floors: tuple

  @property
  def candidate_index(self) -> tuple:
    return tuple(self.names.index(n) for n in self.candidates)

  @property
  def always_on_index(self) -> tuple:
    return tuple(self.names.index(n) for n in self.always_on)

  def bucket_of_floor(self, floor: int) -> int:
    """The highest bucket whose floor is <= `floor` (a layer index)."""
    return max(b for b, f in enumerate(self.bucket_floors) if f <= floor)

  def bucket_of_layers(self, layers: Sequence[str]) -> int:
    """Bucket needed by an active set (the head's bucket when it is empty)."""
    idx = [self.names.index(n) for n in layers]
    return self.bucket_of_floor(min(idx) if idx else len(self.names) - 1)


def last_stage_layers(names: Sequence[str]) -> list:
  """The last residual stage's layers plus a final BatchNorm ('reference' preset).

  A model without residual stage names (a user's own module, layers in call order) gets
  the top quarter of its layers below the head, at least two, instead.
  """
  stages = [int(_BLOCK.match(n).group(2)) for n in names if _BLOCK.match(n)]
  if not stages:
    below = [n for n in names if n != 'head']
    if len(below) < 2:
      raise ConfigError("config.famus.candidates='reference' needs a model with at least two "
                        "layers below the head; use 'all' or a regex list")
    return below[-max(2, len(below) // 4):]
  top = f'stage{max(stages)}'
  return [n for n in names if stage_of(n) == top or n == 'final_bn']


def build_layer_sets(names: Sequence[str], candidates: str, always_on: str,
                     granularity: str) -> LayerSets:
  """LayerSets for a model's layer names (forward order) and the famus config strings."""
  names = list(names)
  extra_on = []
  if candidates == 'all':
    cand = list(names)
  elif candidates == 'reference':
    cand = last_stage_layers(names)
    extra_on = ['head'] if 'head' in names else []
  else:
    cand = match_layers(names, split_patterns(candidates), 'famus.candidates')
  on = match_layers(names, split_patterns(always_on), 'famus.always_on') if always_on else []
  on = [n for n in names if n in on or n in extra_on]
  cand = [n for n in cand if n not in on]
  if granularity not in FLOOR_GRANULARITIES:
    raise ConfigError(f'config.famus.floor_buckets={granularity!r} is not one of '
                      f'{list(FLOOR_GRANULARITIES)}')
  floors, seen = [], set()
  for i, n in enumerate(names):
    g = group_of(n, granularity)
    if g not in seen:
      seen.add(g)
      floors.append(i)
  return LayerSets(tuple(names), tuple(cand), tuple(on), tuple(floors))


def block_layers(names: Sequence[str], block: int) -> list:
  """Layers of residual block number `block` (1-based over the network in forward
  order; negative counts from the top: -1 is the last block)."""
  blocks = residual_blocks(names)
  if not blocks:
    raise ConfigError("config.famus.strategy='block' needs a model with residual blocks")
  if block == 0 or not -len(blocks) <= block <= len(blocks):
    raise ConfigError(f'config.famus.block={block} is outside [1, {len(blocks)}] '
                      f'(or [-{len(blocks)}, -1] counting from the top)')
  prefix = blocks[block - 1 if block > 0 else block]
  return [n for n in names if block_of(n) == prefix]
