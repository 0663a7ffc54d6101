"""DivideMix's semi-supervised step: label refinement, co-guessing, MixUp, loss (device side).

DivideMix (Li, Socher & Hoi, ICLR 2020, Sec. 3.2 "MixMatch with label
co-refinement and co-guessing", and Algorithm 1), used by FaMUS's supplement
(Algorithm 2) for its co-training runs; equations by name (the paper's
equation numbers are not checked here). Network A trains on the labelled set X
that network B's division selected (clean probabilities w_i) and on the rest
as an unlabelled set U, with M = 2 augmentations per image:

  sharpen:          Sharpen(p, T)_c = p_c^(1/T) / sum_c' p_c'^(1/T)
  label refinement: y~_i = Sharpen(w_i y_i + (1 - w_i) p_i, T),
                    p_i the mean of A's softmax over the 2 views
  co-guessing:      q_u = Sharpen(mean over the 4 predictions of A and B on
                    u's 2 views, T)
  MixUp:            lam ~ Beta(alpha, alpha), lam' = max(lam, 1 - lam),
                    x' = lam' x1 + (1 - lam') x2, p' likewise,
                    x2 a random permutation of the concatenated X and U
                    batches (one lam per batch, as the reference code)
  losses:           L_X = -mean_{X'} sum_c p_c log softmax(z)_c
                    L_U = mean_{U'} mean_c (softmax(z)_c - p_c)^2
                    L_reg = sum_c pi_c log(pi_c / mean_{X' u U'} softmax(z)_c),
                    pi_c = 1 / C
                    L = L_X + lambda_u L_U + lambda_r L_reg
  ramp-up:          lambda_u(e) = lambda_u * clip((e - e_warm) / R, 0, 1),
                    e the (fractional) epoch counted from the start of
                    training, e_warm the warm-up epochs, R = 16 in the
                    reference code.

lambda_r is 1 in DivideMix. Everything is pure jnp with static shapes,
jittable; hyper-parameters (T, alpha, lambda_u, lambda_r, warm-up, R) are
arguments.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from famus_jax.data import mixup


def sharpen(p: jnp.ndarray, temperature) -> jnp.ndarray:
  """Sharpen (n, C) distributions: p^(1/T) renormalised over the classes.

  Computed as softmax(log p / T), which is the same and does not underflow for
  small T; a zero probability stays zero (its log has no gradient: these are
  targets, and the caller stops gradients through them, as DivideMix).
  """
  return jax.nn.softmax(jnp.log(p) / temperature, axis=-1)


def refine_labels(onehot: jnp.ndarray, clean_prob: jnp.ndarray, p_mean: jnp.ndarray,
                  temperature) -> jnp.ndarray:
  """Label refinement y~ = Sharpen(w y + (1 - w) p, T).

  onehot (n, C) the noisy labels, clean_prob (n,) the clean probabilities w
  from the other network's division, p_mean (n, C) the mean of this network's
  softmax over the two augmentations.
  """
  w = clean_prob[:, None]
  return sharpen(w * onehot + (1.0 - w) * p_mean, temperature)


def co_guess(p_views: jnp.ndarray, temperature) -> jnp.ndarray:
  """Co-guessed targets for U: Sharpen(mean_v p_v, T).

  p_views (V, n, C): softmax predictions of both networks on both
  augmentations (V = 4 in DivideMix); returns (n, C).
  """
  return sharpen(jnp.mean(p_views, axis=0), temperature)


class Mixed(NamedTuple):
  inputs: jnp.ndarray       # (B, ...) lam x + (1 - lam) x[perm]
  targets: jnp.ndarray      # (B, C)  lam t + (1 - lam) t[perm]
  lam: jnp.ndarray          # () the mixing coefficient, >= 1/2
  permutation: jnp.ndarray  # (B,) int32, the partner of each row


def mixup_batch(rng, inputs: jnp.ndarray, targets: jnp.ndarray, alpha) -> Mixed:
  """MixUp of a whole batch with one coefficient (`famus_jax.data.mixup`).

  lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam), perm a random
  permutation of the B rows; inputs (B, ...) are mixed in (at least) float32,
  targets (B, C) distributions. The caller concatenates the labelled and
  unlabelled batches first, as DivideMix.
  """
  mix = mixup.draw(rng, inputs.shape[0], alpha)
  x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
  t = targets.astype(jnp.promote_types(targets.dtype, jnp.float32))
  mixed_x = mixup.mix_rows(x, mix._replace(lam=mix.lam.astype(x.dtype)))
  mixed_t = mixup.mix_rows(t, mix._replace(lam=mix.lam.astype(t.dtype)))
  return Mixed(mixed_x, mixed_t, mix.lam, mix.perm)


def uniform_prior_penalty(logits: jnp.ndarray) -> jnp.ndarray:
  """L_reg = sum_c pi_c log(pi_c / mean_i softmax(z_i)_c), pi_c = 1/C; logits (n, C)."""
  num_classes = logits.shape[-1]
  mean_p = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
  prior = 1.0 / num_classes
  return jnp.sum(prior * (jnp.log(prior) - jnp.log(mean_p)))


class SemiLoss(NamedTuple):
  total: jnp.ndarray      # () L_X + lambda_u L_U + lambda_r L_reg
  labelled: jnp.ndarray   # () L_X
  unlabelled: jnp.ndarray  # () L_U
  penalty: jnp.ndarray    # () L_reg (unweighted)


def semi_supervised_loss(logits_x: jnp.ndarray, targets_x: jnp.ndarray, logits_u: jnp.ndarray,
                         targets_u: jnp.ndarray, lambda_u, penalty_weight) -> SemiLoss:
  """DivideMix's loss on a mixed batch.

  logits_x (n_x, C) / targets_x (n_x, C) the mixed labelled part,
  logits_u (n_u, C) / targets_u (n_u, C) the mixed unlabelled part.
  L_X = mean_i soft cross-entropy, L_U = mean over examples and classes of
  (softmax(z_u) - q_u)^2, L_reg the uniform-prior penalty on the softmax of
  both parts together; total = L_X + lambda_u L_U + penalty_weight L_reg
  (lambda_u from `linear_rampup`, penalty_weight 1 in DivideMix).
  """
  labelled = -jnp.mean(jnp.sum(targets_x * jax.nn.log_softmax(logits_x, axis=-1), axis=-1))
  unlabelled = jnp.mean(jnp.square(jax.nn.softmax(logits_u, axis=-1) - targets_u))
  penalty = uniform_prior_penalty(jnp.concatenate([logits_x, logits_u], axis=0))
  total = labelled + lambda_u * unlabelled + penalty_weight * penalty
  return SemiLoss(total, labelled, unlabelled, penalty)


def linear_rampup(current_epoch, warmup_epochs, rampup_length, lambda_u) -> jnp.ndarray:
  """lambda_u * clip((current_epoch - warmup_epochs) / rampup_length, 0, 1).

  current_epoch may be fractional (epoch + step / steps_per_epoch, as the
  reference code), counted from the start of training, warm-up included.
  """
  progress = (jnp.asarray(current_epoch, jnp.float32) - warmup_epochs) / rampup_length
  return lambda_u * jnp.clip(progress, 0.0, 1.0)
