"""The meta model's learning rate: its base's rate times a scale, constant or by meta update.

The scale is the product of FaMUS's `famus.meta_lr_scale` (the layer-restricted estimate is a
part of the exact meta gradient, so the meta model learns slower at its base's rate) and the
amortisation factor (`meta.amortised_lr`, `methods.meta_reweighting.amortised_lr_factor`).
Under `famus.exact_steps` the estimate of the first meta updates is the exact one, and
`famus.exact_meta_lr_scale` may give those updates their own scale: then the scale is a
function of optax's update count (0 for the first meta update).
"""

from typing import Callable, Union

import jax.numpy as jnp

Scale = Union[float, Callable]  # a constant, or update count -> scale


def learning_rate(base_lr: float, scale: Scale):
  """base_lr x scale: a float for a constant scale, else an optax schedule of the count."""
  if callable(scale):
    return lambda count: base_lr * scale(count)
  return base_lr * scale


def times(scale: Scale, factor: float) -> Scale:
  """scale x factor, keeping a schedule a schedule."""
  if callable(scale):
    return lambda count: scale(count) * factor
  return scale * factor


def switch_after(first_updates: int, first_scale: float, later_scale: float) -> Scale:
  """first_scale for the meta updates 0 .. first_updates - 1, later_scale from then on."""
  if first_updates <= 0 or first_scale == later_scale:
    return later_scale
  return lambda count: jnp.where(count < first_updates, first_scale, later_scale)
