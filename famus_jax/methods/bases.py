"""The meta re-weighting bases that FaMUS accelerates: MW-Net, L2R and MLC.

A base says how the virtual step's coefficients depend on the meta parameters,
and how the meta gradient dL^val/d coefficients (from an estimator: exact, or
FaMUS's layer-wise one) turns into the actual step. Its interface:

  space: what the coefficients are (`coefficient_space.py`): per-example
    weights eps (n,) (MW-Net, L2R) or a logit cotangent (n, C) (MLC,
    `methods/mlc.py`);
  batch_inputs(ctx): what the coefficients depend on in the step (MW-Net,
    L2R: the losses (n,); MLC: logits and labels);
  init(rng, params) -> state; coefficients(state, inputs) -> (a, pullback
    d_a -> dL/dtheta); update(state, inputs, d_a, pullback) -> (the actual
    step's coefficients, new state, metrics);
  virtual_is_identity: a = 0 (L2R), so the virtual step computes nothing.
"""

import jax
import jax.numpy as jnp
import optax

from famus_jax.meta.weight_net import WeightNet
from famus_jax.methods import meta_lr
from famus_jax.methods.coefficient_space import PER_EXAMPLE
from famus_jax.methods.meta_reweighting import amortised_lr_factor
from famus_jax.methods.mlc import MLCBase


def normalise_by_sum(w: jnp.ndarray, zero_sum_value: jnp.ndarray) -> jnp.ndarray:
  """w / sum(w) when the sum is positive, else `zero_sum_value` (shape (n,))."""
  total = jnp.sum(w)
  safe = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, w / safe, zero_sum_value)


class MWNetBase:
  """MW-Net (Shu et al. 2019): eps_i = V_i / sum_k V_k, V_i = Psi(L_i; theta).

  With `normalize=False`, eps_i = V_i / n (the weighted mean). The meta model
  is updated by SGD with momentum on g = sum_i dL^val/deps_i * deps_i/dtheta
  (FaMUS Eq. 6 / 9), and the actual step uses eps(theta') (Eq. 5).
  """
  name = 'mwnet'
  virtual_is_identity = False
  space = PER_EXAMPLE

  def __init__(self, cfg, lr_scale: meta_lr.Scale = 1.0):
    self.net = WeightNet(hidden=cfg.hidden)
    self.normalize = cfg.normalize
    self.tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                          optax.sgd(meta_lr.learning_rate(cfg.lr, lr_scale),
                                    momentum=cfg.momentum))

  @staticmethod
  def batch_inputs(ctx):
    """The per-example training losses (n,), the weight net's input."""
    return ctx.losses

  def init(self, rng, params):
    del params
    theta = self.net.init(rng, jnp.zeros((1,), jnp.float32))['params']
    return {'params': theta, 'opt_state': self.tx.init(theta)}

  def _eps(self, theta, losses):
    v = self.net.apply({'params': theta}, jax.lax.stop_gradient(losses))
    if self.normalize:
      return normalise_by_sum(v, v)
    return v / losses.shape[0]

  def coefficients(self, state, losses):
    """(eps (n,), pullback d_eps -> dL/dtheta)."""
    eps, pullback = jax.vjp(lambda th: self._eps(th, losses), state['params'])
    return eps, lambda d_eps: pullback(d_eps)[0]

  def update(self, state, losses, d_eps, pullback):
    """Meta step on theta, then the actual step's weights eps(theta')."""
    grads = pullback(d_eps)
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    theta = optax.apply_updates(state['params'], updates)
    weights = self._eps(theta, losses)
    metrics = {'meta_grad_norm': optax.tree.norm(grads)}
    return weights, {'params': theta, 'opt_state': opt_state}, metrics


class L2RBase:
  """Learning to Re-weight (Ren et al. 2018): eps = 0, w = max(-dL^val/deps, 0).

  At eps = 0 the virtual step is the identity (w_hat = w), so the validation
  gradient is taken at w. Weights are normalised by their sum; when every
  weight is clipped to 0 they are uniform (`zero_sum='uniform'`) or all zero
  (`'zero'`, the reference code's choice, i.e. no update that step).
  """
  name = 'l2r'
  virtual_is_identity = True
  space = PER_EXAMPLE

  def __init__(self, cfg, lr_scale: meta_lr.Scale = 1.0):
    del lr_scale  # no meta model, no meta learning rate
    self.zero_sum = cfg.zero_sum

  @staticmethod
  def batch_inputs(ctx):
    return ctx.losses

  def init(self, rng, params):
    del rng, params
    return {}

  def coefficients(self, state, losses):
    del state
    return jnp.zeros_like(losses), lambda d_eps: d_eps

  def update(self, state, losses, d_eps, pullback):
    del pullback
    n = losses.shape[0]
    raw = jnp.maximum(-d_eps, 0.0)
    fallback = jnp.full((n,), 1.0 / n) if self.zero_sum == 'uniform' else jnp.zeros((n,))
    weights = normalise_by_sum(raw, fallback)
    return weights, state, {'zero_weight_fraction': jnp.mean(raw <= 0)}


BASES = {'mwnet': MWNetBase, 'l2r': L2RBase, 'mlc': MLCBase}


def create_base(name: str, config, lr_scale: meta_lr.Scale = 1.0):
  """The base `name` ('mwnet', 'l2r' or 'mlc') with its config group.

  The meta model's learning rate is the group's lr times lr_scale (FaMUS's, a constant or a
  function of the meta update count: `methods.meta_lr`) times the amortisation factor
  (`config.meta.amortised_lr`: k under `update_every` = k with 'scaled'); L2R has no meta
  model and ignores both.
  """
  return BASES[name](getattr(config, name),
                     meta_lr.times(lr_scale, amortised_lr_factor(config.meta)))
