"""The exact meta gradient, written as per-layer inner products.

Notation (FaMUS paper, Sec. 3-4.1; docs/design.md): per-example training
losses L_i(w), i = 1..n, as a function of the base-network parameters w
(BatchNorm in training mode couples the batch, which changes nothing below);
per-example coefficients eps_i of the virtual step

    w_hat = w - alpha * sum_i eps_i grad_w L_i(w)                  (FaMUS Eq. 3)

and the meta (validation) loss L^val(w_hat). Because w_hat is linear in every
eps_i and grad_w L_i(w) does not depend on eps, exactly

    dL^val/d eps_i = -alpha * < grad_{w_hat} L^val(w_hat), grad_w L_i(w) >
                   = -alpha * sum_l < v_l, grad_{w_l} L_i(w) >,     (FaMUS Eq. 7)

with v = grad_{w_hat} L^val. For all i at once the inner product with a
tangent v restricted to a set S of layers is one forward-mode product:
d/dt L(w + t v_S) at t = 0, i.e. `jax.jvp` of the per-example loss vector.
Parameters of layers outside S are closed over as constants, so no tangent
flows through them and (for the validation gradient) no cotangent flows below
the lowest layer of S: restricting S saves real work, not just masks it.

Layers are named by the model: a layer is the '/'-joined path of a leaf
module in the params tree (e.g. ``stage3_block5_conv2``); a parameter's key is
``<layer>/<param>``.
"""

from typing import Callable, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

from famus_jax.models.layers import layer_of

PyTree = object
LossVecFn = Callable[[PyTree], jnp.ndarray]   # params -> (n,) per-example losses
ScalarFn = Callable[[PyTree], jnp.ndarray]    # params -> () validation loss


def flat_params(params) -> dict:
  """params tree -> {'layer/param': array}, in the tree's own key order."""
  return traverse_util.flatten_dict(params, sep='/')


def unflat_params(flat: Mapping) -> dict:
  return traverse_util.unflatten_dict(dict(flat), sep='/')


def select_keys(flat: Mapping, layers: Optional[Iterable[str]]) -> list:
  """Parameter keys that belong to `layers` (all keys when layers is None)."""
  if layers is None:
    return list(flat)
  wanted = set(layers)
  known = {layer_of(k) for k in flat}
  unknown = wanted - known
  if unknown:
    raise ValueError(f'unknown layer names {sorted(unknown)}; the model has {sorted(known)}')
  return [k for k in flat if layer_of(k) in wanted]


def restricted_value_and_grad(fn: ScalarFn, params, layers: Optional[Sequence[str]] = None):
  """(fn(params), {key: d fn / d params[key]} for the keys of `layers`).

  Parameters of other layers are constants of the differentiated function, so
  reverse mode stops below the lowest layer of `layers`.
  """
  flat = flat_params(params)
  keys = select_keys(flat, layers)

  def fn_of_active(active):
    merged = dict(flat)
    merged.update(active)
    return fn(unflat_params(merged))

  return jax.value_and_grad(fn_of_active)({k: flat[k] for k in keys})


def directional_losses(loss_vec_fn: LossVecFn, params, tangent: Mapping) -> jnp.ndarray:
  """(n,) vector < grad_w L_i(w), tangent > for every example i.

  `tangent` maps parameter keys ('layer/param') to arrays; keys not in it are
  held constant (no tangent through them). One `jax.jvp`.
  """
  flat = flat_params(params)
  keys = [k for k in flat if k in tangent]

  def losses_of_active(active):
    merged = dict(flat)
    merged.update(active)
    return loss_vec_fn(unflat_params(merged))

  primals = {k: flat[k] for k in keys}
  tangents = {k: jnp.asarray(tangent[k], primals[k].dtype) for k in keys}
  _, out = jax.jvp(losses_of_active, (primals,), (tangents,))
  return out


def coefficient_gradient(loss_vec_fn: LossVecFn, params, val_grad: Mapping,
                         alpha) -> jnp.ndarray:
  """dL^val/d eps_i = -alpha * < v, grad_w L_i(w) >  (FaMUS Eq. 7), shape (n,).

  `val_grad` holds v = grad_{w_hat} L^val for the layers taking part (all
  layers: the exact meta gradient; a subset S: its layer-wise part, Eq. 9).
  """
  return -alpha * directional_losses(loss_vec_fn, params, val_grad)


def per_layer_coefficient_gradients(loss_vec_fn: LossVecFn, params, val_grad: Mapping,
                                    alpha) -> dict:
  """{layer: (n,)} the contribution of each layer to dL^val/d eps (diagnostics).

  Summed over layers this equals `coefficient_gradient` with all of them.
  """
  by_layer = {}
  for key, value in val_grad.items():
    by_layer.setdefault(layer_of(key), {})[key] = value
  return {layer: coefficient_gradient(loss_vec_fn, params, tangent, alpha)
          for layer, tangent in by_layer.items()}


def head_gradient(features: jnp.ndarray, errors: jnp.ndarray, eps: jnp.ndarray) -> dict:
  """Closed-form gradient of sum_i eps_i L_i w.r.t. a linear classifier head.

  features (n, D) are the head's inputs h_i and errors (n, C) the logit
  errors e_i = dL_i/dz_i; returns {'kernel': H^T (eps * E) (D, C),
  'bias': sum_i eps_i e_i (C,)}. Used by FSR's head-only meta step and
  FaMUS's L_g.
  """
  weighted = eps[:, None] * errors
  return {'kernel': features.T @ weighted, 'bias': jnp.sum(weighted, axis=0)}


def sgd_virtual_params(params, grads, alpha):
  """w_hat = w - alpha * g: the plain-SGD virtual step (FaMUS Eq. 3)."""
  return jax.tree.map(lambda w, g: w - alpha * g, params, grads)


def reference_coefficient_gradient(loss_vec_fn: LossVecFn, val_loss_fn: ScalarFn, params,
                                   eps: jnp.ndarray, alpha,
                                   cut_layers: Optional[Iterable[str]] = None) -> jnp.ndarray:
  """dL^val/d eps by reverse-over-reverse autodiff through the virtual step.

  The way the reference PyTorch code computes it (``create_graph=True``); kept
  as the independent check of `coefficient_gradient`. The virtual step is
  w - alpha grad_w sum(eps * loss_vec_fn(w)): eps (n,) weights per-example
  losses, or, with a `loss_vec_fn` that returns the (n, C) logits, eps (n, C)
  is a logit cotangent (MLC's space, `methods/coefficient_space.py`) and the
  result dL^val/d eps is (n, C). Layers in `cut_layers`
  keep their full virtual update in value but their second-order path is cut
  with `stop_gradient` (the FaMUS reference code's gating of layers that are
  off).
  """
  cut = set(cut_layers or ())

  def val_of_eps(e):
    grads = jax.grad(lambda p: jnp.sum(e * loss_vec_fn(p)))(params)
    flat_g = flat_params(grads)
    flat_g = {k: (jax.lax.stop_gradient(g) if layer_of(k) in cut else g)
              for k, g in flat_g.items()}
    return val_loss_fn(sgd_virtual_params(params, unflat_params(flat_g), alpha))

  return jax.grad(val_of_eps)(eps)
