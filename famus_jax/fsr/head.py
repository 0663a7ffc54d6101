"""FSR's head-only meta step in closed form (feature sharing, FSR Sec. 4.2).

Only the classifier head theta = (W (D, C), b (C,)) takes part in the virtual
update; the backbone is shared, so the head inputs h_i (n, D) of the training
batch and r_j (q, D) of the reward batch are constants of the meta step. With
e_i = dl_i/dz_i (n, C) the training loss's logit errors (softmax - target),

  head gradient of sum_i eps_i l_i:   G_W = sum_i eps_i h_i e_i^T,  G_b = sum_i eps_i e_i
  optimiser direction:                g = G + wd * theta
                                      d = c_g * g + c_t * trace
                                      (heavy ball: c_g = 1, c_t = mu;
                                       Nesterov:   c_g = 1 + mu, c_t = mu^2;
                                       exactly optax.sgd's update direction)
  virtual head:                       theta* = theta - eta * d    (eta = meta_lr)
  reward loss:                        L_R = mean_j CE(r_j W* + b*, y_j)
  its head gradient:                  Gr_W = r^T eps_R / q, Gr_b = mean_j eps_R_j,
                                      eps_R = softmax(r W* + b*) - onehot(y)

Because theta* is linear in every eps_i, exactly

  dL_R/d eps_i = -eta * c_g * ( h_i^T Gr_W e_i + Gr_b . e_i )
               = -eta * c_g * sum_c [(H Gr_W + Gr_b) * E]_{i,c}

two small matrix products, no backward pass through the backbone. It is the
FaMUS layer-wise identity (`famus_jax.meta.meta_gradient.coefficient_gradient`)
with the layer set restricted to 'head', evaluated at theta* instead of theta
(the virtual step starts from eps = 1/b and carries momentum; with eps = 0,
no momentum and no weight decay theta* = theta and it is L2R's gradient).

Everything here is pure jnp on small arrays; shapes are static.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from famus_jax.meta.meta_gradient import head_gradient

Head = dict  # {'kernel': (D, C), 'bias': (C,)}

# Normaliser guard of the weights, as in FSR's reference code: w / (sum w + 1e-5).
NORM_EPS = 1e-5


class Direction(NamedTuple):
  """How the optimiser turns a gradient into an update direction.

  d = grad_coef * (g + weight_decay * theta) + trace_coef * trace.
  """
  grad_coef: float
  trace_coef: float
  weight_decay: float


def optimizer_direction(momentum: float, nesterov: bool, weight_decay: float) -> Direction:
  """The direction of `optax.chain(add_decayed_weights(wd), sgd(lr, momentum, nesterov))`."""
  if nesterov:
    return Direction(1.0 + momentum, momentum * momentum, weight_decay)
  return Direction(1.0, momentum, weight_decay)


def virtual_head(head: Head, features, errors, eps, trace: Optional[Head], meta_lr,
                 direction: Direction) -> Head:
  """theta* = theta - meta_lr * (c_g (G(eps) + wd theta) + c_t trace)."""
  grad = head_gradient(features, errors, eps)
  out = {}
  for key in ('kernel', 'bias'):
    step = direction.grad_coef * (grad[key] + direction.weight_decay * head[key])
    if trace is not None and direction.trace_coef:
      step = step + direction.trace_coef * trace[key]
    out[key] = head[key] - meta_lr * step
  return out


def head_logits(head: Head, features: jnp.ndarray) -> jnp.ndarray:
  return features @ head['kernel'] + head['bias']


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """(n, C) logits, (n, C) target distributions -> (n,) losses."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def smoothed_targets(labels: jnp.ndarray, num_classes: int, smoothing: float) -> jnp.ndarray:
  """(1 - s) onehot + s / C, shape (n, C)."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if not smoothing:
    return onehot
  return (1.0 - smoothing) * onehot + smoothing / num_classes


class RewardGradient(NamedTuple):
  grad_eps: jnp.ndarray     # (n,) dL_R/d eps_i
  reward_loss: jnp.ndarray  # () L_R at theta*
  reward_accuracy: jnp.ndarray  # () accuracy of theta* on the reward batch


def eps_gradient(head_star: Head, features, errors, reward_features, reward_labels, meta_lr,
                 direction: Direction) -> RewardGradient:
  """dL_R/d eps_i for every training example, closed form (module docstring)."""
  q = reward_features.shape[0]
  num_classes = head_star['bias'].shape[0]
  reward_logits = head_logits(head_star, reward_features)
  reward_errors = (jax.nn.softmax(reward_logits)
                   - jax.nn.one_hot(reward_labels, num_classes, dtype=reward_logits.dtype))
  grad_w = reward_features.T @ reward_errors / q          # (D, C)
  grad_b = jnp.mean(reward_errors, axis=0)                 # (C,)
  along = features @ grad_w + grad_b                       # (n, C)
  grad_eps = -meta_lr * direction.grad_coef * jnp.sum(along * errors, axis=-1)
  targets = jax.nn.one_hot(reward_labels, num_classes, dtype=reward_logits.dtype)
  loss = jnp.mean(soft_cross_entropy(reward_logits, targets))
  accuracy = jnp.mean(jnp.argmax(reward_logits, -1) == reward_labels)
  return RewardGradient(grad_eps, loss, accuracy)


def weights_from_gradient(grad_eps: jnp.ndarray, mode: str) -> jnp.ndarray:
  """FSR's per-example weights from dL_R/d eps at eps0 = 1/b (Eq. 3, one step of size 1).

  raw = eps0 - grad. 'noise': w = max(raw - eps0, 0) = max(-grad, 0);
  'longtail': w = raw - min(raw) + eps0 (every weight positive).
  Then w / (sum w + 1e-5) (all zero when every weight is clipped: no update).
  """
  n = grad_eps.shape[0]
  eps0 = 1.0 / n
  raw = eps0 - grad_eps
  if mode == 'noise':
    w = jnp.maximum(raw - eps0, 0.0)
  elif mode == 'longtail':
    w = raw - jnp.min(raw) + eps0
  else:
    raise ValueError(f'unknown weight mode {mode!r}')
  return w / (jnp.sum(w) + NORM_EPS)
