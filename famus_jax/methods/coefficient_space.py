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


class PerExampleSpace:
  """a = eps (n,): the virtual step's cotangent is eps_i e_i (MW-Net, L2R)."""
  name = 'per_example'

  @staticmethod
  def forward(ctx: StepContext) -> Callable:
    """params -> (n,) per-example training losses (a fresh forward pass)."""
    return ctx.loss_vec_fn

  @staticmethod
  def jvp(ctx: StepContext) -> Callable:
    """tangent -> (n,) <grad_w L_i, tangent>, the step's linearisation."""
    return ctx.train_jvp

  @staticmethod
  def vjp(ctx: StepContext) -> Callable:
    """eps (n,) -> params-shaped sum_i eps_i grad_w L_i, the step's linearisation."""
    return ctx.train_vjp

  @staticmethod
  def cotangent(ctx: StepContext, eps: jnp.ndarray) -> jnp.ndarray:
    """K(eps) (n, C) = eps_i e_i."""
    return eps[:, None] * ctx.errors

  @staticmethod
  def actual(eps: jnp.ndarray) -> ActualStep:
    return ActualStep(weights=eps, logit_cotangent=None, example_weights=eps * eps.shape[0])


class LogitSpace:
  """a = c (n, C): the coefficients are the virtual step's logit cotangent itself (MLC)."""
  name = 'logit'

  @staticmethod
  def forward(ctx: StepContext) -> Callable:
    """params -> (n, C) training logits (a fresh forward pass, the step's images and keys)."""
    return lambda params: ctx.apply_fn(params, ctx.batch_stats, ctx.images)[0][0]

  @staticmethod
  def jvp(ctx: StepContext) -> Callable:
    """tangent -> (n, C) (d z / d w) tangent, the step's linearisation."""
    return ctx.logits_jvp

  @staticmethod
  def vjp(ctx: StepContext) -> Callable:
    """c (n, C) -> params-shaped J^T c, the step's linearisation."""
    return ctx.logits_vjp

  @staticmethod
  def cotangent(ctx: StepContext, c: jnp.ndarray) -> jnp.ndarray:
    del ctx
    return c

  @staticmethod
  def actual(c: jnp.ndarray) -> ActualStep:
    """The cotangent trains as it is; no example is re-weighted (example weights 1)."""
    return ActualStep(weights=None, logit_cotangent=c,
                      example_weights=jnp.ones((c.shape[0],), c.dtype))


PER_EXAMPLE = PerExampleSpace()
LOGIT = LogitSpace()
