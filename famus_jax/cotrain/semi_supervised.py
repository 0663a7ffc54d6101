"""The semi-supervised batch of a co-trained member, built inside the one training step.

DivideMix (Li, Socher & Hoi, ICLR 2020, Sec. 3.2 and Algorithm 1) and the
FaMUS supplement's Algorithm 2 train member A on the other member B's
division of the training set: a labelled part X (clean probability
w_i = c_i^B above `cotrain.labelled_threshold`) and an unlabelled rest U.
One step of A, with B batches x (b labelled images, labels y, probabilities
w) and u (u unlabelled images), two augmentations of each:

  p_x   = (softmax f_A(x^1) + softmax f_A(x^2)) / 2           A's own views
  t_x   = Sharpen(w y + (1 - w) p_x, T)                        label refinement
  t_u   = Sharpen(mean of f_A and f_B's softmax on u^1, u^2, T)  co-guessing
  rows  = [x^1, x^2, u^1, u^2] with targets [t_x, t_x, t_u, t_u]  (n = 2b + 2u)
  MixUp of the n rows with one lam = max(lam, 1 - lam), lam ~ Beta(alpha, alpha)

and the loss of the training forward on the mixed rows z_r is

  L_r = (n / 2b) CE(z_r, t_r)                  r a labelled row
  L_r = (n / 2u) lambda_u(e) mean_c (softmax(z_r)_c - t_r,c)^2   r an unlabelled row

so that (1/n) sum_r L_r = L_X + lambda_u L_U, DivideMix's loss, plus the
uniform-prior penalty lambda_r L_reg on all rows (its logit gradient is
added to the actual update unweighted). These L_r are the per-example
losses the method weights: uniform weights (method 'dividemix') give
DivideMix exactly; MW-Net / FaMUS weight each row by the weight net on L_r
(the reference code feeds its weight net the labelled cross-entropy of every
row instead). The meta batch of the meta methods is refined by A's own
views and mixed the same way (two views per image, no unlabelled part), and
its loss is the mean soft cross-entropy plus the penalty.

Guesses: A's own predictions in training mode (batch statistics), B's in
eval mode, as the reference code; all targets are constants (no gradient).
A's guessing forwards (u^1, u^2, then x^1, x^2, the reference code's order)
update A's BatchNorm running statistics one after the other before the mixed
forward does (`guess_updates_bn`, `prepare` threads them): the reference's
forwards run under `no_grad` in training mode, which in PyTorch still moves
the running averages, so most of them come from un-mixed views. Without it
only the mixed rows set them, and after a heavy MixUp (alpha 4) their
variance is smaller than clean images' (about 0.6x after the first
convolution), which the eval-mode test forward and the division's losses then
see. Pure jnp, static shapes, jittable.

`SemiSupervised` is the step's batch preparation hook
(famus_jax/methods/preparation.py): `prepare` returns the mixed rows with
the dominant examples' labels and ids, L_r as their `row_losses`, the mixed
meta rows with `meta_loss`, the BatchNorm statistics the guesses leave, the
penalty's logit gradient as `extra_cotangent` and the diagnostics as
`metrics`.
"""

import dataclasses
from typing import Callable

import flax
import jax
import jax.numpy as jnp

from famus_jax.cotrain import mixmatch
from famus_jax.methods.preparation import PreparationInputs, PreparedBatch

# images (k, H, W, C) float32 -> (k, C) logits (no gradient).
LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]
# (uint8 images, key) -> float32 augmented, normalised images.
AugmentFn = Callable[[jnp.ndarray, jax.Array], jnp.ndarray]


@flax.struct.dataclass
class SoftBatch:
  """The mixed rows of one semi-supervised step (n = 2b + 2u rows).

  images: (n, H, W, C) float32 mixed views; targets: (n, C) mixed targets;
  unlabelled: (n,) bool, True on the rows of U (squared-error loss);
  labels, indices: (n,) int32 the given label and training id of each row's
  dominant example (its own: lam >= 1/2); lam: () the MixUp coefficient;
  num_labelled: 2b (static).
  """
  images: jnp.ndarray
  targets: jnp.ndarray
  unlabelled: jnp.ndarray
  labels: jnp.ndarray
  indices: jnp.ndarray
  lam: jnp.ndarray
  num_labelled: int = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class SoftMeta:
  """The refined, mixed meta batch of 2m rows.

  images: (2m, H, W, C) float32; targets: (2m, C); labels: (2m,) int32 given labels.
  """
  images: jnp.ndarray
  targets: jnp.ndarray
  labels: jnp.ndarray


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """(n, C) logits, (n, C) target distributions -> (n,) -sum_c t_c log softmax(z)_c."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _softmax(logits_fn: LogitsFn, images):
  return jax.nn.softmax(jax.lax.stop_gradient(logits_fn(images)), axis=-1)


@dataclasses.dataclass(frozen=True)
class SemiSupervised:
  """The static settings of the semi-supervised step (the `config.cotrain` group).

  temperature: T of the sharpening; alpha: MixUp's Beta(alpha, alpha);
  lambda_u: the unlabelled loss weight after the ramp-up; warmup_epochs and
  rampup_epochs: lambda_u(e) = lambda_u clip((e - warmup) / rampup, 0, 1)
  (`mixmatch.linear_rampup`) at the fractional epoch e = step /
  steps_per_epoch; penalty_weight: lambda_r of the uniform-prior penalty;
  guess_updates_bn: this member's guessing forwards update its BatchNorm
  running statistics (module docstring; `config.cotrain.guess_updates_bn`).
  """
  temperature: float
  alpha: float
  lambda_u: float
  warmup_epochs: float
  rampup_epochs: float
  penalty_weight: float
  steps_per_epoch: int
  guess_updates_bn: bool = True

  def unlabelled_weight(self, step) -> jnp.ndarray:
    """() lambda_u(e) at the step counter `step` (counted from 0, warm-up included)."""
    epoch = jnp.asarray(step, jnp.float32) / self.steps_per_epoch
    return mixmatch.linear_rampup(epoch, self.warmup_epochs, self.rampup_epochs, self.lambda_u)

  def training_batch(self, own: LogitsFn, partner: LogitsFn, batch: dict, augment: AugmentFn,
                     rng) -> SoftBatch:
    """The mixed rows from the batch's labelled and unlabelled parts (module docstring).

    batch: image (b, H, W, C) uint8, label (b,), index (b,), clean_prob (b,)
    float32 (the partner's c_i), unlabelled_image (u, H, W, C),
    unlabelled_label (u,), unlabelled_index (u,). own / partner: this member's
    (training mode) and the partner's (eval mode) logits of float images.
    """
    keys = jax.random.split(rng, 5)
    x, u = batch['image'], batch['unlabelled_image']
    x1, x2, u1, u2 = (augment(images, key) for images, key in zip((x, x, u, u), keys[:4]))
    # Own forwards in the reference code's order (u^1, u^2, x^1, x^2): with
    # guess_updates_bn each one moves the running statistics the next one starts from.
    own_u1, own_u2 = _softmax(own, u1), _softmax(own, u2)
    p_x = (_softmax(own, x1) + _softmax(own, x2)) / 2
    onehot = jax.nn.one_hot(batch['label'], p_x.shape[-1], dtype=p_x.dtype)
    t_x = mixmatch.refine_labels(onehot, batch['clean_prob'].astype(p_x.dtype), p_x,
                                 self.temperature)
    views = jnp.stack([own_u1, own_u2, _softmax(partner, u1), _softmax(partner, u2)])
    t_u = mixmatch.co_guess(views, self.temperature)
    mixed = mixmatch.mixup_batch(keys[4], jnp.concatenate([x1, x2, u1, u2]),
                                 jnp.concatenate([t_x, t_x, t_u, t_u]), self.alpha)
    b, n_u = x.shape[0], u.shape[0]
    unlabelled = jnp.concatenate([jnp.zeros((2 * b,), bool), jnp.ones((2 * n_u,), bool)])
    labels = jnp.concatenate([batch['label']] * 2 + [batch['unlabelled_label']] * 2)
    indices = jnp.concatenate([batch['index']] * 2 + [batch['unlabelled_index']] * 2)
    return SoftBatch(images=mixed.inputs, targets=jax.lax.stop_gradient(mixed.targets),
                     unlabelled=unlabelled, labels=labels.astype(jnp.int32),
                     indices=indices.astype(jnp.int32), lam=mixed.lam, num_labelled=2 * b)

  def meta_batch(self, own: LogitsFn, batch: dict, augment: AugmentFn, rng) -> SoftMeta:
    """The refined, mixed meta batch from meta_image (m, ...), meta_label, meta_clean_prob (m,)."""
    k1, k2, k3 = jax.random.split(rng, 3)
    images = batch['meta_image']
    v1, v2 = augment(images, k1), augment(images, k2)
    p = (_softmax(own, v1) + _softmax(own, v2)) / 2
    onehot = jax.nn.one_hot(batch['meta_label'], p.shape[-1], dtype=p.dtype)
    t = mixmatch.refine_labels(onehot, batch['meta_clean_prob'].astype(p.dtype), p,
                               self.temperature)
    mixed = mixmatch.mixup_batch(k3, jnp.concatenate([v1, v2]), jnp.concatenate([t, t]),
                                 self.alpha)
    labels = jnp.concatenate([batch['meta_label']] * 2).astype(jnp.int32)
    return SoftMeta(images=mixed.inputs, targets=jax.lax.stop_gradient(mixed.targets),
                    labels=labels)

  def row_losses(self, logits: jnp.ndarray, soft: SoftBatch, lambda_u) -> jnp.ndarray:
    """(n,) L_r of the module docstring: their mean is L_X + lambda_u L_U."""
    n = logits.shape[0]
    num_unlabelled = n - soft.num_labelled
    ce = soft_cross_entropy(logits, soft.targets)
    se = jnp.mean(jnp.square(jax.nn.softmax(logits, axis=-1) - soft.targets), axis=-1)
    labelled_scale = n / max(soft.num_labelled, 1)
    unlabelled_scale = n / max(num_unlabelled, 1)
    return jnp.where(soft.unlabelled, unlabelled_scale * lambda_u * se, labelled_scale * ce)

  def penalty(self, logits: jnp.ndarray) -> jnp.ndarray:
    """() lambda_r L_reg, the uniform-prior penalty on (k, C) logits."""
    return self.penalty_weight * mixmatch.uniform_prior_penalty(logits)

  def meta_loss(self, logits: jnp.ndarray, meta: SoftMeta) -> jnp.ndarray:
    """() the meta loss: mean soft cross-entropy of the mixed meta rows plus the penalty."""
    return jnp.mean(soft_cross_entropy(logits, meta.targets)) + self.penalty(logits)

  def metrics(self, logits: jnp.ndarray, soft: SoftBatch, lambda_u) -> dict:
    """The step's semi-supervised diagnostics: L_X, L_U, L_reg (unweighted), lambda_u, lam."""
    unl = soft.unlabelled
    ce = soft_cross_entropy(logits, soft.targets)
    se = jnp.mean(jnp.square(jax.nn.softmax(logits, axis=-1) - soft.targets), axis=-1)
    return {'semi_labelled_loss': jnp.sum(jnp.where(unl, 0.0, ce)) / max(soft.num_labelled, 1),
            'semi_unlabelled_loss': (jnp.sum(jnp.where(unl, se, 0.0))
                                     / max(logits.shape[0] - soft.num_labelled, 1)),
            'prior_penalty': mixmatch.uniform_prior_penalty(logits),
            'lambda_u': jnp.asarray(lambda_u, jnp.float32), 'mixup_lam': soft.lam}

  def prepare(self, inputs: PreparationInputs) -> PreparedBatch:
    """The step's rows (module docstring): the batch preparation hook of a co-trained member.

    inputs.batch: `training_batch`'s entries, partner_params and
    partner_batch_stats (the other member's, replicated) and, with a meta
    set, `meta_batch`'s. This member's guesses are training-mode forwards
    (`inputs.apply_fn`, batch statistics), the partner's eval-mode ones
    (`inputs.eval_logits`).
    """
    batch = inputs.batch
    # This member's running statistics as its guessing forwards leave them, in call order.
    guess_stats = [inputs.batch_stats]

    def own(x):  # training mode, batch statistics
      (logits, _), new_stats = inputs.apply_fn(inputs.params, guess_stats[0], x)
      if self.guess_updates_bn:
        guess_stats[0] = new_stats
      return logits

    def partner(x):
      return inputs.eval_logits(batch['partner_params'], batch['partner_batch_stats'], x)

    soft = self.training_batch(own, partner, batch, inputs.augment, inputs.aug_rng)
    meta = None
    if inputs.uses_meta_set:
      meta = self.meta_batch(own, batch, inputs.augment, inputs.meta_aug_rng)
    lambda_u = self.unlabelled_weight(inputs.step)
    return PreparedBatch(
        images=soft.images, labels=soft.labels, indices=soft.indices,
        row_losses=lambda z: self.row_losses(z, soft, lambda_u),
        meta_images=None if meta is None else meta.images,
        meta_labels=None if meta is None else meta.labels,
        meta_loss=None if meta is None else (lambda z: self.meta_loss(z, meta)),
        batch_stats=guess_stats[0], extra_cotangent=jax.grad(self.penalty),
        metrics=lambda z: self.metrics(z, soft, lambda_u))


def from_config(cotrain_cfg, steps_per_epoch: int) -> SemiSupervised:
  """The SemiSupervised settings of `config.cotrain` (famus_jax/config.py)."""
  c = cotrain_cfg
  return SemiSupervised(temperature=c.sharpen_temperature, alpha=c.mixup_alpha,
                        lambda_u=c.lambda_u, warmup_epochs=c.warmup_epochs,
                        rampup_epochs=c.rampup_epochs, penalty_weight=c.prior_penalty_weight,
                        steps_per_epoch=steps_per_epoch, guess_updates_bn=c.guess_updates_bn)
