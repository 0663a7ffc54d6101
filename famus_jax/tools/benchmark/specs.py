"""The benchmark's methods and networks: each benchmark variant's config, from the catalogue.

Methods are the benchmark variants of `famus_jax.catalogue` (name -> config overrides,
settling steps, and optionally the layers the learned samplers of another variant settled on:
'famus_static' holds those of 'famus'). Add a variant to a method's catalogue entry (or a
network to `MODELS`) to benchmark it. `make_config` builds a variant's config on the
synthetic source at CIFAR shape.
"""

import dataclasses
import functools
from typing import Callable, Optional

from famus_jax import catalogue
from famus_jax import config as base_config


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """overrides: dotted config field -> value. settle_steps: untimed steps first
  (e.g. for samplers to settle). derive: results so far -> extra overrides."""
  overrides: dict
  settle_steps: int = 0
  derive: Optional[Callable[[dict], dict]] = None


def _static_from_learned(results: dict, learned: str) -> dict:
  """'famus_static': the layer set `learned`'s samplers chose most often at the end of settling."""
  layers = results.get(learned, {}).get('settled', {}).get('most_frequent_active_set')
  return {'famus.static_layers': ','.join(layers)} if layers else {}


def method_specs() -> dict:
  """Benchmark name -> `MethodSpec`: the benchmark variants `famus_jax.catalogue` declares."""
  specs = {}
  for name, (_, variant) in catalogue.benchmark_variants().items():
    derive = (functools.partial(_static_from_learned, learned=variant.static_layers_from)
              if variant.static_layers_from else None)
    specs[name] = MethodSpec(dict(variant.overrides), variant.settle_steps, derive)
  return specs


def method_spec(name: str) -> MethodSpec:
  """The spec of benchmark variant `name` (ValueError naming the known ones otherwise)."""
  specs = method_specs()
  if name not in specs:
    raise ValueError(f'unknown method {name!r}; known: {sorted(specs)}')
  return specs[name]


MODELS = {
    'resnet32': {'model': 'resnet', 'depth': 32},
    'resnet20': {'model': 'resnet', 'depth': 20},
    'resnet8': {'model': 'resnet', 'depth': 8},
    'wrn-28-2': {'model': 'wide_resnet', 'depth': 28, 'width': 2},
    'wrn-40-2': {'model': 'wide_resnet', 'depth': 40, 'width': 2},  # the FaMUS supplement's MLC net
    'wrn-28-10': {'model': 'wide_resnet', 'depth': 28, 'width': 10},
    'preact_resnet18': {'model': 'preact_resnet18'},
    'small_cnn': {'model': 'small_cnn', 'width': 16},
}


def make_config(model: str, batch_size: int, image_size: int, spec: MethodSpec,
                extra: dict):
  """The config of one benchmark run: `model` (`MODELS`) on random data of CIFAR shape
  (`image_size`), the spec's overrides and then `extra` (dotted field -> value)."""
  c = base_config.get_config()
  c.dataset = c.data_source = 'synthetic'
  c.synthetic.image_size = image_size
  c.synthetic.num_train = 4 * batch_size
  c.synthetic.num_test = batch_size
  c.num_meta = 10 * -(-batch_size // 10)  # class-balanced: a multiple of the 10 classes
  c.batch_size = c.meta_batch_size = c.eval_batch_size = batch_size
  c.num_steps = 100_000
  c.lr.schedule = 'constant'
  c.progress_bar = False
  c.update_from_flattened_dict({**MODELS[model], **spec.overrides, **extra})
  return c


def step_form(config) -> str:
  """How the method's actual update is computed, for the table's 'actual step' column."""
  method = config.method
  if method == 'famus' and config.famus.base == 'l2r' or method == 'l2r':
    return 'l2r (one form)'
  if method in ('mwnet', 'famus', 'mlc'):
    return config.meta.actual_step
  if method == 'fsr':
    return config.fsr.mixup_form if config.fsr.mixup_alpha > 0 else 'no mixup'
  return '-'


def settle_steps_of(spec: MethodSpec, override: Optional[int]) -> int:
  """The spec's settling steps, or `override` for specs that settle at all."""
  if override is None:
    return spec.settle_steps
  return override if spec.settle_steps else 0


def peer_method(name: str) -> Optional[str]:
  """The PyTorch peer's method for benchmark variant `name`, or None when it has none."""
  method, variant = catalogue.benchmark_variants()[name]
  return method.peer if variant.peer else None
