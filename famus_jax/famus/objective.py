"""The auxiliary FaMUS losses L_r and L_g (FaMUS Eq. 10-11), in closed form.

L_r = (sum_l r_l - K)^2 counts the sampled candidate layers (always-on layers
are not counted: K is the number of layers the samplers should pick).

L_g = || g_bar_L^tra - g_bar_L^val ||^2 at the classifier head L only, where

  g_bar_L^tra = Avg-Pool( sum_i eps_i dL_i/dW_L )           (training, at w)
  g_bar_L^val = Avg-Pool( (1/m) sum_j dL_j^val/dW_hat_L )   (validation, at w_hat)

The head is linear in its input, so with features h_i (n, D) and softmax
errors e_i = p_i - y_i (n, C):

  sum_i eps_i dL_i/dW_L = H^T (eps * E)  (D, C),   bias part sum_i eps_i e_i,
  W_hat_L(eps) = W_L - alpha H^T (eps * E),       b_hat_L = b_L - alpha sum_i eps_i e_i,
  val logits = H_val W_hat_L + b_hat_L,  E_val = softmax(val logits) - onehot,
  dL^val/dW_hat_L = H_val^T E_val / m,            bias part mean_j E_val_j.

Gradient to the meta model: L_g depends on theta through eps(theta). We
differentiate both terms in closed form with every feature held fixed (h_i at
w, h_val_j at w_hat: their dependence on eps through the lower layers'
virtual update is dropped), i.e. through the training-gradient average and
through the head's own virtual update. Cost: a few (n or m) x D x C products.
When the validation features are not available the validation term is a
constant target (gradient through g_bar^tra only).

`form='meanstd'` is the reference code's variant: per output class c, the
mean and the standard deviation over the input axis of the head's kernel
gradient are matched, L_g = sum_c (mu^tra_c - mu^val_c)^2 + (s^tra_c - s^val_c)^2.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from famus_jax.meta.meta_gradient import head_gradient

LG_FORMS = ('avgpool', 'meanstd')


def selection_loss(num_sampled: jnp.ndarray, target: float) -> jnp.ndarray:
  """L_r = (sum_l r_l - K)^2 (Eq. 10)."""
  return (num_sampled - target) ** 2


def head_val_gradient(kernel, bias, val_features, val_labels):
  """(kernel (D, C), bias (C,)) of the mean validation loss's gradient at the head."""
  logits = val_features @ kernel + bias
  errors = jax.nn.softmax(logits) - jax.nn.one_hot(val_labels, logits.shape[-1],
                                                  dtype=logits.dtype)
  m = val_features.shape[0]
  return val_features.T @ errors / m, jnp.mean(errors, axis=0)


def _summary(kernel, bias, form):
  if form == 'avgpool':
    return jnp.concatenate([jnp.mean(kernel, axis=0), bias])
  return jnp.concatenate([jnp.mean(kernel, axis=0), jnp.std(kernel, axis=0)])


def gradient_matching_loss(eps, features, errors, head, alpha, form: str,
                           val_head_grad: Optional[dict] = None,
                           val_features: Optional[jnp.ndarray] = None,
                           val_labels: Optional[jnp.ndarray] = None):
  """L_g (Eq. 11) as a differentiable function of eps (see the module docstring).

  head: the head's params {'kernel', 'bias'} at w. Either val_features and
  val_labels (the validation term follows the head's virtual update) or
  val_head_grad {'kernel', 'bias'} (a constant target) must be given.
  """
  tra = head_gradient(features, errors, eps)
  k_tra, b_tra = tra['kernel'], tra['bias']
  if val_features is not None:
    k_hat = head['kernel'] - alpha * k_tra
    b_hat = head['bias'] - alpha * b_tra
    k_val, b_val = head_val_gradient(k_hat, b_hat, val_features, val_labels)
  else:
    k_val = jax.lax.stop_gradient(val_head_grad['kernel'])
    b_val = jax.lax.stop_gradient(val_head_grad['bias'])
  diff = _summary(k_tra, b_tra, form) - _summary(k_val, b_val, form)
  return jnp.sum(diff ** 2)
