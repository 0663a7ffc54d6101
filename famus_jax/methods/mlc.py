"""MLC, meta loss correction (Wang, Hu & Hu, CVPR 2020; FaMUS ref. [51], Table 2).

The meta parameters are a noise transition matrix T (C x C, row j = the distribution of the
noisy label given clean class j), and the training loss is the forward-corrected cross-entropy

    L_i(w, T) = -log q_{i, y_i},   q_i = softmax(z_i) T,   z_i = the logits of example i,

whose logit error is the prediction minus the posterior of the clean class given the noisy label,

    c_i(T) = dL_i/dz_i = p_i - r_i,   p_i = softmax(z_i),
    r_ij = p_ij T_{j y_i} / q_{i y_i} = softmax_j(log p_ij + log T_{j y_i}),

(T = I gives r_i = onehot(y_i): plain cross-entropy). The virtual step is the SGD step on the
mean corrected loss, w_hat(T) = w - alpha * J^T c(T) / n, affine in the logit cotangent
c(T) / n, so (`coefficient_space.py`, the logit-space form of FaMUS Eq. 7)

    dL^val/dT = -alpha * sum_i < (J v)_i, d(c_i / n)/dT >,   v = grad_{w_hat} L^val(w_hat),

one JVP of the step's linearisation for all i, pulled back through c(T) by `jax.vjp`. FaMUS's
layer restriction applies to v exactly as for MW-Net (Eq. 9).

Parameterisation and initialisation (the choices; docs/design.md Sec. 4.2):

  * T = row-softmax(Theta), Theta (C, C) free, updated by SGD with momentum (and optional weight
    decay) on dL^val/dTheta; every T is a valid transition matrix without a projection, and the
    meta gradient is the exact derivative of the update's objective.
  * Theta_0 = s * I with s = log(d (C - 1) / (1 - d)), so T_0 has d = `mlc.init_diagonal` on the
    diagonal and (1 - d) / (C - 1) elsewhere: close to the identity (no noise) that the official
    code starts from, which a softmax cannot reach exactly.
  * The official code (github.com/ZhenWang-PhD/Training-Noise-Robust-Deep-Neural-Networks-via-
    Meta-Learning, main.py) differs: it restarts from T = I at every step, takes one projected
    step max(I - 0.11 dL^val/dT, 0) with columns renormalised, multiplies the *logits* by T
    (z T, not softmax(z) T), uses a fixed virtual-step size 1e-3 on the summed loss, and starts
    from a 30k-iteration cross-entropy warm-up (base lr 1e-4 afterwards). Here T is learned
    across steps, as the paper's Sec. 3 describes, on probabilities.

The actual step: 'recompute' trains on c(T') / n (the new T), 'reuse' on the virtual step's
gradient J^T c(T) / n (`meta_reweighting.py`); examples are not re-weighted (weights 1).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from famus_jax.methods import meta_lr
from famus_jax.methods.coefficient_space import LOGIT


class CorrectionInputs(NamedTuple):
  """What the MLC base reads from the step: logits (n, C) (no gradient), labels (n,) int32."""
  logits: jnp.ndarray
  labels: jnp.ndarray


def initial_transition_logits(num_classes: int, diagonal: float) -> jnp.ndarray:
  """Theta_0 (C, C) = s * I whose row-softmax has `diagonal` on the diagonal, in (0, 1)."""
  s = jnp.log(diagonal * (num_classes - 1) / (1.0 - diagonal))
  return s * jnp.eye(num_classes, dtype=jnp.float32)


def log_transition(theta: jnp.ndarray) -> jnp.ndarray:
  """log T (C, C), T = row-softmax(Theta): row j is P(noisy label | clean class j)."""
  return jax.nn.log_softmax(theta, axis=-1)


def _joint(logits, labels, log_t):
  """(n, C) log p_ij + log T_{j y_i}: the log joint of clean class j and the noisy label."""
  return jax.nn.log_softmax(logits) + log_t[:, labels].T


def corrected_losses(logits, labels, log_t) -> jnp.ndarray:
  """(n,) L_i = -log (softmax(z_i) T)_{y_i}, the forward-corrected cross-entropy."""
  return -jax.nn.logsumexp(_joint(logits, labels, log_t), axis=-1)


def corrected_errors(logits, labels, log_t) -> jnp.ndarray:
  """(n, C) c_i = dL_i/dz_i = softmax(z_i) - r_i, r_i the clean-class posterior (module doc)."""
  return jax.nn.softmax(logits) - jax.nn.softmax(_joint(logits, labels, log_t), axis=-1)


class MLCBase:
  """Meta loss correction: the virtual coefficients are the logit cotangent c(T) / n.

  cfg: the `config.mlc` group (init_diagonal, lr, momentum, weight_decay); the learning rate
  of Theta is cfg.lr x lr_scale (a constant or a schedule: `methods.meta_lr`).
  """
  name = 'mlc'
  virtual_is_identity = False
  space = LOGIT

  def __init__(self, cfg, lr_scale: meta_lr.Scale = 1.0):
    self.init_diagonal = cfg.init_diagonal
    self.tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                          optax.sgd(meta_lr.learning_rate(cfg.lr, lr_scale),
                                    momentum=cfg.momentum))

  @staticmethod
  def batch_inputs(ctx) -> CorrectionInputs:
    return CorrectionInputs(ctx.logits, ctx.labels)

  def init(self, rng, params):
    """{'params': Theta (C, C), 'opt_state'}; C from the classifier head of `params`."""
    del rng
    theta = initial_transition_logits(params['head']['bias'].shape[0], self.init_diagonal)
    return {'params': theta, 'opt_state': self.tx.init(theta)}

  @staticmethod
  def _cotangent(theta, inputs: CorrectionInputs):
    n = inputs.labels.shape[0]
    return corrected_errors(inputs.logits, inputs.labels, log_transition(theta)) / n

  def coefficients(self, state, inputs: CorrectionInputs):
    """(c(T) / n (n, C), pullback d_c (n, C) -> dL/dTheta (C, C))."""
    c, pullback = jax.vjp(lambda th: self._cotangent(th, inputs), state['params'])
    return c, lambda d_c: pullback(d_c)[0]

  def update(self, state, inputs: CorrectionInputs, d_c, pullback):
    """Meta step on Theta, then the actual step's cotangent c(T') / n."""
    grads = pullback(d_c)
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    theta = optax.apply_updates(state['params'], updates)
    log_t = log_transition(theta)
    metrics = {'meta_grad_norm': optax.tree.norm(grads),
               'mlc_transition_diagonal': jnp.diag(jnp.exp(log_t)),
               'mlc_corrected_loss': jnp.mean(corrected_losses(inputs.logits, inputs.labels,
                                                               log_t))}
    return self._cotangent(theta, inputs), {'params': theta, 'opt_state': opt_state}, metrics
