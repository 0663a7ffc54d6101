"""Meta re-weighting = a base (MW-Net, L2R) + a meta-gradient estimator.

One step (FaMUS paper Sec. 3, Eq. 3-5):
  1. Virtual-Train: eps = eps(theta); w_hat = w - alpha * sum_i eps_i grad L_i(w)
     (alpha = the current learning rate; plain SGD, no momentum or decay).
  2. Meta-Train: the estimator returns dL^val/d eps (n,); the base turns it
     into the meta update (MW-Net: theta' by SGD on the pulled-back gradient;
     L2R: clipped negative gradient).
  3. Actual-Train: the step applies the real optimiser to a weighted training
     gradient, in one of two forms (`config.meta.actual_step`):
       'recompute'  sum_i eps_i(theta') grad L_i(w): the paper's Eq. 5 (and
                    MW-Net's), with the meta model's new parameters; one more
                    backward pass over the training batch.
       'reuse'      sum_i eps_i(theta) grad L_i(w): the virtual step's own
                    gradient, already computed in step 1, so the step needs
                    one training backward in all; theta' acts from the next
                    step on (as the official MLC code does).
     L2R's virtual step is the identity (eps = 0) and computes no gradient:
     its actual update always costs the one backward of its weights.

The estimator is the only thing FaMUS changes: `ExactEstimator` uses every
layer (FaMUS Eq. 7); FaMUS's estimator uses the sampled layers (Eq. 9).
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from famus_jax.errors import ConfigError
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods.base import Method, StepContext, WeightOutput


class Estimate(NamedTuple):
  """An estimator's answer: d_eps (n,) = dL^val/d eps (the meta update's input),
  its new state, its metrics, and a dispatch record for the host or None."""
  d_eps: jnp.ndarray
  state: Any
  metrics: dict
  dispatch: Optional[Any] = None


class ExactEstimator:
  """dL^val/d eps_i = -alpha <grad_{w_hat} L^val, grad_w L_i>, all layers.

  The validation gradient is one reverse pass at w_hat; the n inner products
  are one forward-mode product reusing the step's linearisation.
  """
  name = 'exact'

  def init(self, rng, params):
    del rng, params
    return {}

  def __call__(self, ctx: StepContext, w_hat, train_grads, state, rng, eps=None,
               pullback=None):
    """The Estimate (d_eps (n,), state, metrics). eps / pullback: the base's virtual
    coefficients and d_eps -> meta-gradient map (None for L2R, whose virtual
    step is the identity); estimators that learn from the meta gradient use them.
    """
    del train_grads, rng, eps, pullback
    val_loss, val_grad = jax.value_and_grad(ctx.val_loss_fn)(w_hat)
    d_eps = -ctx.lr * ctx.train_jvp(val_grad)
    return Estimate(d_eps, state, {'meta_loss': val_loss})


ACTUAL_STEPS = ('recompute', 'reuse')


class MetaReweighting(Method):
  """A base and an estimator, wired into the common step.

  meta_cfg: the `config.meta` group (`actual_step`, module docstring).
  """
  uses_meta_set = True

  def __init__(self, name, base, estimator, meta_cfg):
    self.name = name
    self.base = base
    self.estimator = estimator
    if meta_cfg.actual_step not in ACTUAL_STEPS:
      raise ConfigError(f'config.meta.actual_step={meta_cfg.actual_step!r} is not one of '
                        f'{list(ACTUAL_STEPS)}')
    self.actual_step = meta_cfg.actual_step

  def actual_update(self, weights, eps, train_grads, n):
    """The WeightOutput fields of step 3: (weights, extra_grads, example_weights).

    'reuse' hands the virtual step's gradient sum_i eps_i grad L_i to the
    optimiser (and reports eps as the weights applied); 'recompute', and any
    base without a virtual gradient (L2R), weight the step's backward by the
    new weights.
    """
    if self.actual_step == 'reuse' and train_grads is not None:
      return None, train_grads, eps * n
    return weights, None, weights * n

  def init_state(self, rng, params, num_train):
    del num_train
    base_rng, est_rng = jax.random.split(rng)
    return {'base': self.base.init(base_rng, 0),
            'estimator': self.estimator.init(est_rng, params)}

  def virtual_step(self, ctx: StepContext, base_state):
    """(eps, pullback, w_hat, weighted train gradient or None) of step 1."""
    eps, pullback = self.base.coefficients(base_state, ctx.losses)
    if self.base.virtual_is_identity:
      return eps, pullback, ctx.params, None
    train_grads = ctx.train_vjp(eps)
    return eps, pullback, mg.sgd_virtual_params(ctx.params, train_grads, ctx.lr), train_grads

  def weights(self, ctx, method_state, batch, rng):
    del batch
    eps, pullback, w_hat, train_grads = self.virtual_step(ctx, method_state['base'])
    identity = self.base.virtual_is_identity
    estimate = self.estimator(
        ctx, w_hat, train_grads, method_state['estimator'], rng,
        eps=None if identity else eps, pullback=None if identity else pullback)
    weights, base_state, base_metrics = self.base.update(
        method_state['base'], ctx.losses, estimate.d_eps, pullback)
    actual, extra_grads, example_weights = self.actual_update(
        weights, eps, train_grads, ctx.losses.shape[0])
    return WeightOutput(weights=actual, extra_grads=extra_grads,
                        example_weights=example_weights,
                        method_state={'base': base_state, 'estimator': estimate.state},
                        metrics={**estimate.metrics, **base_metrics},
                        dispatch=estimate.dispatch)


class ReverseOverReverse(MetaReweighting):
  """The same method with dL^val/d eps by reverse-over-reverse autodiff.

  The way the reference PyTorch code computes it (``create_graph=True``):
  `jax.grad` through the virtual step. Kept as a selectable path
  (`config.meta_gradient='reverse_over_reverse'`) so speed and results can be
  compared with the production JVP path; the tests hold them equal.
  """

  def weights(self, ctx, method_state, batch, rng):
    del batch, rng
    eps, pullback = self.base.coefficients(method_state['base'], ctx.losses)
    d_eps = mg.reference_coefficient_gradient(ctx.loss_vec_fn, ctx.val_loss_fn, ctx.params,
                                              eps, ctx.lr)
    weights, base_state, base_metrics = self.base.update(
        method_state['base'], ctx.losses, d_eps, pullback)
    train_grads = None if self.base.virtual_is_identity else ctx.train_vjp(eps)
    w_hat = ctx.params if train_grads is None else mg.sgd_virtual_params(
        ctx.params, train_grads, ctx.lr)
    actual, extra_grads, example_weights = self.actual_update(
        weights, eps, train_grads, ctx.losses.shape[0])
    return WeightOutput(weights=actual, extra_grads=extra_grads,
                        example_weights=example_weights,
                        method_state={**method_state, 'base': base_state},
                        metrics={**base_metrics, 'meta_loss': ctx.val_loss_fn(w_hat)})
