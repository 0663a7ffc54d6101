"""What a meta-learning base's virtual coefficients are: per-example weights or logit cotangents.

Every base's virtual step moves the network along one pull-back of the training logits,

    w_hat(a) = w - alpha * J^T K(a),        J = d z / d w,                 (FaMUS Eq. 3)

with z (n, C) the training batch's logits (BatchNorm in training mode couples the rows: J is the
Jacobian of the whole batch's logits), a the base's coefficients and K(a) (n, C) the logit
cotangent they make. K is linear and does not depend on w, so w_hat is affine in K(a) and, with
v = grad_{w_hat} L^val(w_hat), exactly

    dL^val / dK = -alpha * J v        (n, C): one JVP of the step's linearisation,
    dL^val / da = K^T (-alpha * J v).

Two spaces:

  PER_EXAMPLE (MW-Net, L2R): a = eps (n,), K(eps)_i = eps_i e_i with e_i = dL_i/dz_i, so
      dL^val/d eps_i = -alpha <e_i, (J v)_i> = -alpha <grad_w L_i(w), v>   (FaMUS Eq. 7),
      `ctx.train_jvp`; the actual step weights the losses (`WeightOutput.weights`).
  LOGIT (MLC): a = K(a) = c (n, C), the cotangent itself (MLC's is the corrected
      cross-entropy's dL_i/dz_i / n, `methods/mlc.py`), so dL^val/dc = -alpha J v,
      `ctx.logits_jvp`; the actual step is that cotangent (`WeightOutput.logit_cotangent`).

In both, `forward(ctx)` is the function of the params whose JVP is the coefficient derivative
(the per-example losses, or the logits), so that a restricted `jax.jvp` and the
reverse-over-reverse reference (`meta_gradient.reference_coefficient_gradient`, which
differentiates val(w - alpha grad_w sum(a * forward(w))) in a) serve both spaces unchanged.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from famus_jax.methods.base import StepContext


class ActualStep(NamedTuple):
  """The `WeightOutput` fields of a base's actual update.

  weights: (n,) per-example coefficients of the weighted loss, or None;
  logit_cotangent: (n, C) cotangent on the training logits, or None;
  example_weights: (n,) each example's weight, uniform = 1 (the trainer's statistics);
  extra_grads: a ready gradient (the virtual step's, `meta.actual_step='reuse'`), or None.
  """
  weights: Optional[jnp.ndarray]
  logit_cotangent: Optional[jnp.ndarray]
  example_weights: jnp.ndarray
  extra_grads: Optional[Any] = None


class CoefficientSpace(NamedTuple):
  """One space of virtual coefficients a (module docstring); every field takes the step's context.

  name: 'per_example' or 'logit'.
  forward: ctx -> (params -> (n,) losses | (n, C) logits), a fresh forward pass.
  jvp: ctx -> (tangent -> dL^val/da's shape), the step's linearisation: `train_jvp` (n,)
    <grad_w L_i, tangent> or `logits_jvp` (n, C) (dz/dw) tangent.
  vjp: ctx -> (a -> params-shaped J^T K(a)), the step's linearisation (the virtual gradient).
  cotangent: (ctx, a) -> K(a) (n, C).
  actual: new coefficients a -> the `ActualStep` that trains on them.
  """
  name: str
  forward: Callable[[StepContext], Callable]
  jvp: Callable[[StepContext], Callable]
  vjp: Callable[[StepContext], Callable]
  cotangent: Callable[[StepContext, jnp.ndarray], jnp.ndarray]
  actual: Callable[[jnp.ndarray], ActualStep]


def actual_gradient(ctx: StepContext, weights: Optional[jnp.ndarray], extra_grads=None,
                    cotangents=()):
  """grad_w of sum_i eps_i L_i + sum_k <c_k, z> (+ extra_grads): one backward pass.

  weights: (n,) eps, or None; cotangents: (n, C) logit cotangents c_k (None entries skipped),
  added to eps_i e_i in this order; extra_grads: a params-shaped gradient added last, or None.
  Returns the params-shaped gradient, or None when every term is None.
  """
  cotangent = None
  if weights is not None:
    cotangent = weights.astype(ctx.losses.dtype)[:, None] * ctx.errors
  for extra in cotangents:
    if extra is not None:
      cotangent = extra if cotangent is None else cotangent + extra
  grads = ctx.logits_vjp(cotangent) if cotangent is not None else None
  if extra_grads is not None:
    grads = extra_grads if grads is None else jax.tree.map(jnp.add, grads, extra_grads)
  return grads


def _weighted_losses(eps: jnp.ndarray) -> ActualStep:
  """The per-example weights eps train as weights (example weights eps * n)."""
  return ActualStep(weights=eps, logit_cotangent=None, example_weights=eps * eps.shape[0])


def _logit_cotangent(c: jnp.ndarray) -> ActualStep:
  """The cotangent trains as it is; no example is re-weighted (example weights 1)."""
  return ActualStep(weights=None, logit_cotangent=c,
                    example_weights=jnp.ones((c.shape[0],), c.dtype))


def _training_logits(ctx: StepContext) -> Callable:
  """params -> (n, C) training logits: the step's images, batch statistics and dropout key."""
  return lambda params: ctx.apply_fn(params, ctx.batch_stats, ctx.images)[0][0]


# a = eps (n,), K(eps)_i = eps_i e_i (MW-Net, L2R).
PER_EXAMPLE = CoefficientSpace(
    name='per_example', forward=lambda ctx: ctx.loss_vec_fn, jvp=lambda ctx: ctx.train_jvp,
    vjp=lambda ctx: ctx.train_vjp, cotangent=lambda ctx, eps: eps[:, None] * ctx.errors,
    actual=_weighted_losses)
# a = c (n, C) = K(c): the coefficients are the virtual step's logit cotangent (MLC).
LOGIT = CoefficientSpace(
    name='logit', forward=_training_logits, jvp=lambda ctx: ctx.logits_jvp,
    vjp=lambda ctx: ctx.logits_vjp, cotangent=lambda ctx, c: c, actual=_logit_cotangent)
