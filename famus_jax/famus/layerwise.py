"""The layer-wise meta gradient g'_S for a set S of named layers (FaMUS Eq. 7, 9).

With v = grad_{w_hat} L^val(w_hat) and the per-example training losses L_i(w),

    dL^val/d eps_i |_S = -alpha * sum_{l in S} < v_l, grad_{w_l} L_i(w) >,

the layer-l part of the exact coefficient gradient summed over S; pulled back
through the meta model (MW-Net) it is g'_S = sum_{l in S} (layer-l part of g).
S = every layer gives the exact meta gradient.

Cost structure. Let f be the lowest layer of S (the *floor*). `v` is needed
only for layers >= f: `restricted_value_and_grad_aux` differentiates with the
parameters of lower layers closed over as constants, so the validation
backward pass stops at f. The n inner products are one JVP whose tangent is v
on S (zero on layers in [f, top] outside S, absent below f):

  jvp='sparse'      `ctx.train_jvp`, the step's shared linearisation, evaluated
                    with the tangents of the other layers as symbolic zeros
                    (`sparse_linear.py`): no forward pass is recomputed and the
                    work below f is never emitted. The default.
  jvp='restricted'  a fresh `jax.jvp` of the training losses with only the
                    parameters of layers >= f as primals: the forward pass is
                    recomputed (~1 forward) but the tangent starts at f.
  jvp='linearized'  `ctx.train_jvp` called with materialised zeros: no new
                    forward, but the linear program runs over every layer
                    (XLA does not skip zero tangents).

Measured on XLA:CPU, ResNet-32, batch 100, tangent on the last residual
block (process CPU seconds on top of the step's forward + VJP, ~1.2-2.0 s):
'sparse' +0.0 s, 'restricted' +0.27 s, 'linearized' +0.53 s; with every layer
all three cost about the same (+0.4-0.5 s).
"""

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from famus_jax.famus import sparse_linear
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods.coefficient_space import PER_EXAMPLE
from famus_jax.models import layer_names

JVP_MODES = ('sparse', 'restricted', 'linearized')


def restricted_value_and_grad_aux(fn: Callable, params, layers: Optional[Sequence[str]]):
  """((fn(params) value, aux), {key: d value / d params[key]}) for keys of `layers`.

  fn: params -> (scalar, aux). Like `meta_gradient.restricted_value_and_grad`,
  parameters of other layers are constants, so reverse mode stops below the
  lowest layer of `layers`.
  """
  flat = mg.flat_params(params)
  keys = mg.select_keys(flat, layers)

  def fn_of_active(active):
    merged = dict(flat)
    merged.update(active)
    return fn(mg.unflat_params(merged))

  return jax.value_and_grad(fn_of_active, has_aux=True)({k: flat[k] for k in keys})


def masked_tangent(val_grad: dict, layer_mask: dict) -> dict:
  """{key: v[key] * mask[layer(key)]}: v restricted to the active layers.

  layer_mask maps layer names to scalars (0./1., possibly traced); keys of
  layers without an entry are dropped.
  """
  return {k: g * layer_mask[mg.layer_of(k)] for k, g in val_grad.items()
          if mg.layer_of(k) in layer_mask}


def directional(ctx, tangent: dict, mode: str, space=PER_EXAMPLE) -> jnp.ndarray:
  """(n,) < grad_w L_i(w), tangent > for every training example (one JVP).

  In a base's logit space (`space=LOGIT`, MLC) the (n, C) JVP of the logits
  instead, (d z / d w) tangent (`methods/coefficient_space.py`).
  """
  if mode == 'restricted':
    return mg.directional_losses(space.forward(ctx), ctx.params, tangent)
  flat = mg.flat_params(ctx.params)
  if mode == 'sparse':
    sparse = mg.unflat_params({k: tangent.get(k) for k in flat})
    return sparse_linear.apply_with_zeros(space.jvp(ctx), ctx.params, sparse)
  full = {k: (tangent[k] if k in tangent else jnp.zeros_like(p)) for k, p in flat.items()}
  return space.jvp(ctx)(mg.unflat_params(full))


def layerwise_coefficient_gradient(ctx, w_hat, layers: Sequence[str],
                                   mode: str = 'sparse') -> jnp.ndarray:
  """dL^val/d eps restricted to `layers` (n,): the Eq. 9 estimate for S = layers.

  Only layers >= the lowest of `layers` take part in the validation backward
  pass; the JVP tangent is the validation gradient on `layers`.
  """
  order = layer_names(ctx.params)
  wanted = set(layers)
  floor = min(order.index(n) for n in wanted)
  above = order[floor:]
  _, val_grad = mg.restricted_value_and_grad(ctx.val_loss_fn, w_hat, above)
  mask = {n: jnp.float32(1.0 if n in wanted else 0.0) for n in above}
  return -ctx.lr * directional(ctx, masked_tangent(val_grad, mask), mode)


def per_layer_contributions(ctx, w_hat) -> dict:
  """{layer: (n,)} each layer's part of dL^val/d eps (diagnostics; one JVP per layer).

  Summed over the layers this is the exact coefficient gradient.
  """
  val_grad = mg.flat_params(jax.grad(ctx.val_loss_fn)(w_hat))
  return mg.per_layer_coefficient_gradients(ctx.loss_vec_fn, ctx.params, val_grad, ctx.lr)
