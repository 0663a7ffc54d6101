"""Meta re-weighting = a base (MW-Net, L2R, MLC) + a meta-gradient estimator.

One step (FaMUS paper Sec. 3, Eq. 3-5):
  1. Virtual-Train: eps = eps(theta); w_hat = w - alpha * sum_i eps_i grad L_i(w)
     (alpha = the current learning rate; plain SGD, no momentum or decay).
     In general the coefficients a(theta) live in the base's space
     (`coefficient_space.py`): w_hat = w - alpha J^T K(a), J = d logits / dw;
     MLC's a is the corrected loss's logit cotangent c(T) / n (`mlc.py`).
  2. Meta-Train: the estimator returns dL^val/d eps (n,) (dL^val/d a, of a's
     shape); the base turns it into the meta update (MW-Net: theta' by SGD on
     the pulled-back gradient; L2R: clipped negative gradient; MLC: T' by SGD).
  3. Actual-Train: the step applies the real optimiser to a weighted training
     gradient, in one of two forms (`config.meta.actual_step`):
       'recompute'  sum_i eps_i(theta') grad L_i(w): the paper's Eq. 5 (and
                    MW-Net's), with the meta model's new parameters; one more
                    backward pass over the training batch.
       'reuse'      sum_i eps_i(theta) grad L_i(w): the virtual step's own
                    gradient, already computed in step 1, so the step needs
                    one training backward in all; theta' acts from the next
                    step on (as the code of Meta Label Correction,
                    microsoft/MLC, does; not the MLC base here).
     L2R's virtual step is the identity (eps = 0) and computes no gradient:
     its actual update always costs the one backward of its weights.

The estimator is the only thing FaMUS changes: `ExactEstimator` uses every
layer (FaMUS Eq. 7); FaMUS's estimator uses the sampled layers (Eq. 9).

Amortised meta updates (`config.meta.update_every` = k > 1): steps 1-2 run on
the steps whose counter is a multiple of k; on the others the meta model
(weight net, samplers, transition matrix) stays as it is and the actual step
trains on its coefficients for this batch, a(theta) (MW-Net: eps_i(theta) =
V(L_i; theta) / sum_j V(L_j; theta); MLC: the corrected loss's cotangent with
the current T): one forward of the small meta model and the one training
backward, ERM's cost plus that forward. The two kinds of step are two compiled
programs, chosen on the host from the step's number (`AmortisedVariants`): a
choice inside one program (`jax.lax.cond` on the step counter, `amortised`) ran
about 35x slower on both kinds of step on XLA:CPU (ResNet-8, batch 100), so it
is kept only for a step built without the host policy. On the steps without a
meta update the meta metrics are NaN ("not measured at this step"; the log's
window means skip them) and `meta_update` is 0. L2R has no meta model to apply
(its weights are the meta gradient itself): it updates at every step whatever k.
"""

import copy
from typing import Any, Hashable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from famus_jax import catalogue
from famus_jax.errors import ConfigError
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods.base import Method, StepContext, StepVariants, WeightOutput
from famus_jax.methods.coefficient_space import PER_EXAMPLE, ActualStep, actual_gradient


class Estimate(NamedTuple):
  """An estimator's answer: d_eps (n,) = dL^val/d eps (the meta update's input;
  of the coefficients' shape, e.g. (n, C) in MLC's logit space), its new state,
  its metrics, and a dispatch record for the host or None."""
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
               pullback=None, space=PER_EXAMPLE):
    """The Estimate (d_eps (n,), state, metrics). eps / pullback: the base's virtual
    coefficients and d_eps -> meta-gradient map (None for L2R, whose virtual
    step is the identity); estimators that learn from the meta gradient use them.
    space: the base's coefficient space (`coefficient_space.py`); its JVP gives
    dL^val/d a = K^T(-alpha J v) (per example: -alpha <grad_w L_i, v>).
    """
    del train_grads, rng, eps, pullback
    val_loss, val_grad = jax.value_and_grad(ctx.val_loss_fn)(w_hat)
    d_eps = -ctx.lr * space.jvp(ctx)(val_grad)
    return Estimate(d_eps, state, {'meta_loss': val_loss})

  def idle_dispatch(self, ctx: StepContext):
    """The dispatch record of a step without a meta update: none (one compiled step)."""
    del ctx


ACTUAL_STEPS = ('recompute', 'reuse')
AMORTISED_LRS = ('scaled', 'same')  # config.meta.amortised_lr (`amortised_lr_factor`)
META, APPLY = 'meta', 'apply'  # the two kinds of step of amortised meta updates


class AmortisedVariants(StepVariants):
  """Amortised meta updates (`config.meta.update_every` = k > 1) as two kinds of compiled step.

  Before step t the host runs (META, the inner policy's key) when t % k == 0
  (the meta update, compiled once per key of `inner`, e.g. FaMUS's floor
  buckets) and (APPLY,) otherwise (the current meta model's coefficients, one
  compiled step). `inner.choose` sees every record, so its host-side history
  (FaMUS's floor guesses) stays current; its records of APPLY steps say they
  need nothing (`idle_dispatch`).
  """
  needs_step = True

  def __init__(self, inner: StepVariants, every: int):
    self.inner = inner
    self.every = every
    self.speculative = inner.speculative

  def choose(self, record, step: Optional[int] = None) -> Hashable:
    if step is None:
      raise ValueError('amortised meta updates choose their step from its number; got None')
    inner_key = self.inner.choose(record, step)
    return (META, inner_key) if step % self.every == 0 else (APPLY,)

  def specialise(self, method, key):
    out = copy.copy(self.inner.specialise(method, key[1]) if key[0] == META else method)
    out.phase = key[0]
    return out

  def accepts(self, key, record) -> bool:
    return key[0] == APPLY or self.inner.accepts(key[1], record)


def amortised_lr_factor(meta_cfg) -> int:
  """The factor on the meta model's learning rate under amortised meta updates.

  With `update_every` = k the meta model takes one step per k training steps;
  `amortised_lr` = 'scaled' multiplies its learning rate by k, so that it moves about as far
  per epoch as when it is updated at every step (k steps of size lr against one of size
  k lr on one batch's meta gradient); 'same' keeps the base's rate. 1 when k = 1.
  """
  if meta_cfg.amortised_lr not in AMORTISED_LRS:
    raise ConfigError(f'config.meta.amortised_lr={meta_cfg.amortised_lr!r} is not one of '
                      f'{list(AMORTISED_LRS)}')
  return meta_cfg.update_every if meta_cfg.amortised_lr == 'scaled' else 1


def amortise(variants: StepVariants, every: int) -> StepVariants:
  """`variants` itself for k = 1, else its `AmortisedVariants`."""
  return variants if every == 1 else AmortisedVariants(variants, every)


class MetaReweighting(Method):
  """A base and an estimator, wired into the common step.

  meta_cfg: the `config.meta` group (`actual_step`, `update_every`, module docstring).
  """
  uses_meta_set = True
  # With update_every > 1: META or APPLY in the compiled step of each kind (`AmortisedVariants`);
  # None in a step built without the host policy (both kinds under one `jax.lax.cond`).
  phase = None

  def __init__(self, name, base, estimator, meta_cfg):
    self.name = name
    self.base = base
    self.estimator = estimator
    if meta_cfg.actual_step not in ACTUAL_STEPS:
      raise ConfigError(f'config.meta.actual_step={meta_cfg.actual_step!r} is not one of '
                        f'{list(ACTUAL_STEPS)}')
    self.actual_step = meta_cfg.actual_step
    if meta_cfg.update_every < 1:
      raise ConfigError(f'config.meta.update_every={meta_cfg.update_every!r} must be >= 1')
    # L2R has no meta model to apply between meta updates (its weights are the meta gradient
    # itself): it updates at every step whatever the field says.
    self.update_every = 1 if base.virtual_is_identity else meta_cfg.update_every
    self.variants = amortise(StepVariants(), self.update_every)

  def actual_update(self, weights, eps, train_grads) -> ActualStep:
    """Step 3 from the base's new (`weights`) and virtual (`eps`) coefficients.

    'reuse' hands the virtual step's gradient J^T K(eps) (sum_i eps_i grad L_i)
    to the optimiser (and reports eps as the weights applied); 'recompute', and
    any base without a virtual gradient (L2R), put the new coefficients on the
    step's backward (per-example weights, or MLC's logit cotangent).
    """
    space = self.base.space
    if self.actual_step == 'reuse' and train_grads is not None:
      return ActualStep(weights=None, logit_cotangent=None, extra_grads=train_grads,
                        example_weights=space.actual(eps).example_weights)
    return space.actual(weights)

  @staticmethod
  def output(actual: ActualStep, method_state, metrics, dispatch=None) -> WeightOutput:
    """The step's WeightOutput: the actual update with the method's new state and metrics."""
    return WeightOutput(weights=actual.weights, logit_cotangent=actual.logit_cotangent,
                        extra_grads=actual.extra_grads, example_weights=actual.example_weights,
                        method_state=method_state, metrics=metrics, dispatch=dispatch)

  def set_layer_order(self, names) -> None:
    if hasattr(self.estimator, 'set_layer_order'):
      self.estimator.set_layer_order(names)

  def init_state(self, rng, params, num_train):
    del num_train
    base_rng, est_rng = jax.random.split(rng)
    return {'base': self.base.init(base_rng, params),
            'estimator': self.estimator.init(est_rng, params)}

  def virtual_step(self, ctx: StepContext, base_state):
    """(eps, pullback, w_hat, weighted train gradient or None) of step 1."""
    eps, pullback = self.base.coefficients(base_state, self.base.batch_inputs(ctx))
    if self.base.virtual_is_identity:
      return eps, pullback, ctx.params, None
    train_grads = self.base.space.vjp(ctx)(eps)
    return eps, pullback, mg.sgd_virtual_params(ctx.params, train_grads, ctx.lr), train_grads

  def weights(self, ctx, method_state, batch, rng):
    """The meta update's step (`meta_update`), or, with update_every = k > 1, the step of
    this compiled kind (`phase`): the meta update or the current meta model's coefficients
    (module docstring)."""
    if self.update_every == 1:
      return self.meta_update(ctx, method_state, batch, rng)
    if self.phase == META:
      return self.with_meta_update(ctx, method_state, batch, rng)
    if self.phase == APPLY:
      return self.without_meta_update(ctx, method_state, batch, rng)
    return self.amortised(ctx, method_state, batch, rng)

  def with_meta_update(self, ctx, method_state, batch, rng) -> WeightOutput:
    """A step of amortised updates that updates the meta model: `meta_update`, its whole
    actual-step gradient in `extra_grads` (as the other kind of step answers) and
    META_UPDATE = 1."""
    out = self.meta_update(ctx, method_state, batch, rng)
    grads = actual_gradient(ctx, out.weights, out.extra_grads, (out.logit_cotangent,))
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in out.metrics.items()}
    return out.replace(weights=None, logit_cotangent=None, extra_grads=grads,
                       metrics={**metrics, catalogue.META_UPDATE: jnp.float32(1.0)})

  def without_meta_update(self, ctx, method_state, batch, rng) -> WeightOutput:
    """A step of amortised updates between meta updates: the current meta model's
    coefficients on the step's one backward; the meta metrics NaN, META_UPDATE = 0."""
    space = self.base.space
    coefficients, _ = self.base.coefficients(method_state['base'], self.base.batch_inputs(ctx))
    shapes = jax.eval_shape(lambda: self.with_meta_update(ctx, method_state, batch, rng))
    metrics = {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.metrics.items()}
    metrics[catalogue.META_UPDATE] = jnp.float32(0.0)
    return WeightOutput(
        weights=None, logit_cotangent=None, extra_grads=space.vjp(ctx)(coefficients),
        example_weights=space.actual(coefficients).example_weights,
        method_state=method_state, metrics=metrics,
        dispatch=self.estimator.idle_dispatch(ctx))

  def amortised(self, ctx, method_state, batch, rng) -> WeightOutput:
    """Both kinds of step in one program, `jax.lax.cond(step % k == 0, ...)`: for a step
    built without the host policy (`make_train_step` on an unspecialised method); slow on
    XLA:CPU (module docstring)."""
    args = (ctx, method_state, batch, rng)
    return jax.lax.cond(ctx.step % self.update_every == 0,
                        lambda: self.with_meta_update(*args),
                        lambda: self.without_meta_update(*args))

  def meta_update(self, ctx, method_state, batch, rng) -> WeightOutput:
    """Steps 1-3 of the module docstring: virtual step, meta update, actual update."""
    del batch
    eps, pullback, w_hat, train_grads = self.virtual_step(ctx, method_state['base'])
    identity = self.base.virtual_is_identity
    estimate = self.estimator(
        ctx, w_hat, train_grads, method_state['estimator'], rng,
        eps=None if identity else eps, pullback=None if identity else pullback,
        space=self.base.space)
    weights, base_state, base_metrics = self.base.update(
        method_state['base'], self.base.batch_inputs(ctx), estimate.d_eps, pullback)
    return self.output(self.actual_update(weights, eps, train_grads),
                       {'base': base_state, 'estimator': estimate.state},
                       {**estimate.metrics, **base_metrics}, estimate.dispatch)


class ReverseOverReverse(MetaReweighting):
  """The same method with dL^val/d eps by reverse-over-reverse autodiff.

  The way the reference PyTorch code computes it (``create_graph=True``):
  `jax.grad` through the virtual step. Kept as a selectable path
  (`config.meta_gradient='reverse_over_reverse'`) so speed and results can be
  compared with the production JVP path; the tests hold them equal.
  """

  def meta_update(self, ctx, method_state, batch, rng):
    del batch, rng
    space, inputs = self.base.space, self.base.batch_inputs(ctx)
    eps, pullback = self.base.coefficients(method_state['base'], inputs)
    d_eps = mg.reference_coefficient_gradient(space.forward(ctx), ctx.val_loss_fn, ctx.params,
                                              eps, ctx.lr)
    weights, base_state, base_metrics = self.base.update(
        method_state['base'], inputs, d_eps, pullback)
    train_grads = None if self.base.virtual_is_identity else space.vjp(ctx)(eps)
    w_hat = ctx.params if train_grads is None else mg.sgd_virtual_params(
        ctx.params, train_grads, ctx.lr)
    return self.output(self.actual_update(weights, eps, train_grads),
                       {**method_state, 'base': base_state},
                       {**base_metrics, 'meta_loss': ctx.val_loss_fn(w_hat)})
