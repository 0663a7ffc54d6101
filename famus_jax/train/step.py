"""The one training step shared by every method, and the evaluation step.

`train_step(state, batch) -> (state, StepOutput)` is pure; `make_train_step`
binds the static parts (model, method, optimiser, schedule, augmentation).
The step

  1. augments the batch on the device (key: fold_in(state.rng, state.step)),
     and lets the method replace the images the forward sees
     (`Method.prepare_images`: the identity by default; FSR's one-pass MixUp);
  2. runs the training forward pass once, linearised (`jax.linearize`), which
     yields the per-example losses, a JVP and (by transposition) a VJP;
  3. asks the method for per-example coefficients eps (and optional extra
     gradients) given that context;
  4. applies the real optimiser to grad_w sum_i eps_i L_i(w) (+ extras);
  5. keeps the old state if the loss or gradient is not finite, and says so in
     `StepOutput.finite` (the loop stops with the step number).

Batch dict (global shapes; the leading axis is sharded over devices):
  image (n, H, W, C) uint8, label (n,) int32, index (n,) int32 and, for
  methods with a meta set, meta_image (m, H, W, C) uint8, meta_label (m,).
  A co-trained member's semi-supervised step (`semi` given; famus_jax/
  cotrain/semi_supervised.py) also takes clean_prob (n,) float32,
  unlabelled_image (u, H, W, C), unlabelled_label (u,), unlabelled_index (u,),
  partner_params and partner_batch_stats (the other member's, replicated)
  and, with a meta set, meta_clean_prob (m,); its forward then runs on the
  2n + 2u mixed rows, with their soft-target losses.
"""

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from famus_jax.cotrain.semi_supervised import SemiSupervised, SoftBatch, SoftMeta
from famus_jax.data import augment_batch
from famus_jax.data.augment import train_augment_fn
from famus_jax.methods.base import Method, StepContext
from famus_jax.train.state import TrainState


@flax.struct.dataclass
class StepOutput:
  """What one training step returns besides the new state.

  metrics: dict of scalars and small arrays for the log ('train_loss',
    'train_accuracy', 'weighted_loss', 'grad_norm', 'lr' and the method's own).
  example_weights: (n,) each example's weight in the actual update (uniform = 1).
  finite: () bool, False when the loss or gradient was NaN/inf (state kept).
  dispatch: the method's `WeightOutput.dispatch` (FaMUS: its DispatchRecord) or None.
  """
  metrics: dict
  example_weights: jnp.ndarray
  finite: jnp.ndarray
  dispatch: Optional[Any] = None


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """(n, C) logits, (n,) int labels -> (n,) losses."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_apply_fn(model, dropout_rng):
  """(params, batch_stats, images, train) -> ((logits, features), new_batch_stats)."""

  def apply_fn(params, batch_stats, images, train=True):
    variables = {'params': params, 'batch_stats': batch_stats}
    if not train:
      return model.apply(variables, images, train=False, return_features=True), batch_stats
    out, mutated = model.apply(variables, images, train=True, return_features=True,
                               mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    return out, mutated['batch_stats']

  return apply_fn


def _tree_select(ok, new, old):
  return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def build_context(model, state: TrainState, batch: dict, images, meta_images, lr,
                  dropout_rng, num_classes: int, meta_bn_train: bool = True, mix=None,
                  semi: Optional[SemiSupervised] = None, soft: Optional[SoftBatch] = None,
                  soft_meta: Optional[SoftMeta] = None):
  """Run the training forward pass once, linearised, and wrap it in a StepContext.

  images: (n, H, W, C) float32 (augmented, and prepared by the method);
  meta_images: (m, H, W, C) float32 or None; meta_bn_train: the validation
  forward pass uses batch statistics (as the reference code, whose meta model
  is in training mode) or running ones; mix: `Method.prepare_images`'s info,
  kept as `ctx.mix`. With `semi`, `soft` describes the mixed rows `images`
  are (their soft targets replace the labels: L_i = `semi.row_losses`, and
  the uniform-prior penalty becomes `ctx.penalty_cotangent`) and `soft_meta`
  the mixed meta rows (`semi.meta_loss`). Returns (ctx, new_batch_stats from
  the training forward). BatchNorm statistics of every other forward pass
  (virtual, validation) are thrown away.
  """
  apply_fn = make_apply_fn(model, dropout_rng)
  labels, indices = batch['label'], batch['index']
  lambda_u = penalty_cotangent = None
  if soft is None:
    def loss_of_logits(z):
      return cross_entropy(z, labels)
  else:
    labels, indices = soft.labels, soft.indices
    lambda_u = semi.unlabelled_weight(state.step)

    def loss_of_logits(z):
      return semi.row_losses(z, soft, lambda_u)

  def logits_and_aux(params):
    (logits, features), new_stats = apply_fn(params, state.batch_stats, images)
    return logits, (features, new_stats)

  logits, logits_jvp, (features, new_stats) = jax.linearize(
      logits_and_aux, state.params, has_aux=True)
  transpose = jax.linear_transpose(logits_jvp, state.params)
  losses = loss_of_logits(logits)
  if soft is None:
    # dL_i/dlogits_i = softmax_i - onehot_i: turns logit-space products into loss-space ones.
    errors = jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1],
                                                     dtype=logits.dtype)
  else:
    errors = jax.grad(lambda z: jnp.sum(loss_of_logits(z)))(logits)
    penalty_cotangent = jax.lax.stop_gradient(jax.grad(semi.penalty)(logits))

  def logits_vjp(cotangent):
    return transpose(cotangent)[0]

  val_loss_fn = val_outputs_fn = None
  if meta_images is not None:
    meta_labels = batch['meta_label'] if soft_meta is None else soft_meta.labels

    def val_loss_of_logits(z):
      if soft_meta is None:
        return jnp.mean(cross_entropy(z, meta_labels))
      return semi.meta_loss(z, soft_meta)

    def val_loss_fn(params):
      (val_logits, _), _ = apply_fn(params, state.batch_stats, meta_images, meta_bn_train)
      return val_loss_of_logits(val_logits)

    def val_outputs_fn(params):
      (val_logits, val_features), _ = apply_fn(params, state.batch_stats, meta_images,
                                               meta_bn_train)
      loss = val_loss_of_logits(val_logits)
      return loss, {'logits': val_logits, 'features': val_features, 'labels': meta_labels}

  semi_metrics = {} if soft is None else semi.metrics(jax.lax.stop_gradient(logits), soft,
                                                       lambda_u)
  ctx = StepContext(
      params=state.params, batch_stats=state.batch_stats, opt_state=state.opt_state,
      step=state.step, lr=lr, images=images, labels=labels, indices=indices,
      losses=jax.lax.stop_gradient(losses), logits=jax.lax.stop_gradient(logits),
      features=jax.lax.stop_gradient(features), errors=jax.lax.stop_gradient(errors),
      loss_vec_fn=lambda p: loss_of_logits(logits_and_aux(p)[0]),
      train_jvp=lambda t: jnp.sum(errors * logits_jvp(t), axis=-1),
      train_vjp=lambda c: logits_vjp(c[:, None] * errors), logits_vjp=logits_vjp,
      logits_jvp=logits_jvp,
      val_loss_fn=val_loss_fn, apply_fn=apply_fn, num_classes=num_classes,
      val_outputs_fn=val_outputs_fn, mix=mix, penalty_cotangent=penalty_cotangent,
      semi_metrics=semi_metrics)
  return ctx, new_stats


def combined_gradient(ctx: StepContext, out):
  """grad_w of sum_i eps_i L_i + <logit cotangent, logits> (+ extra), one backward pass.

  The semi-supervised step's uniform-prior penalty (`ctx.penalty_cotangent`)
  joins the same backward pass, unweighted.
  """
  cotangent = None
  if out.weights is not None:
    cotangent = out.weights.astype(ctx.losses.dtype)[:, None] * ctx.errors
  for extra in (out.logit_cotangent, ctx.penalty_cotangent):
    if extra is not None:
      cotangent = extra if cotangent is None else cotangent + extra
  grads = ctx.logits_vjp(cotangent) if cotangent is not None else None
  if out.extra_grads is not None:
    grads = out.extra_grads if grads is None else jax.tree.map(jnp.add, grads, out.extra_grads)
  return grads


def make_context_fn(model, uses_meta_set: bool, lr_fn: Callable, augment_cfg, mean, std,
                    num_classes: int, meta_bn_train: bool = True,
                    prepare_images: Optional[Callable] = None,
                    semi: Optional[SemiSupervised] = None):
  """context(state, batch) -> (ctx, new_batch_stats, method_rng): steps 1-2 of the step.

  The augmentation, dropout and method keys are fixed by (state.rng,
  state.step), so a diagnostic tool calling this on the same state and batch
  sees exactly the step's context (e.g. `famus_jax.tools.quality`).
  prepare_images: the method's `Method.prepare_images(images, method_rng) ->
  (images, info)`, run between augmentation and the forward; None = identity.
  semi: a co-trained member's semi-supervised settings: the forward runs on
  the mixed rows `semi.training_batch` builds from the batch (module
  docstring) instead of the augmented images, and the meta batch is refined
  and mixed (`semi.meta_batch`).
  """
  augment = train_augment_fn(augment_cfg, mean, std)  # config.augment.crop: pad | resized
  eval_logits = make_eval_logits_fn(model, mean, std, normalised=True)

  def context(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, meta_aug_rng, dropout_rng, method_rng = jax.random.split(rng, 4)
    soft = soft_meta = None
    if semi is None:
      images = augment(batch['image'], aug_rng)
    else:
      apply_fn = make_apply_fn(model, dropout_rng)
      # This member's running statistics as its guessing forwards leave them, in call order.
      guess_stats = [state.batch_stats]

      def own(x):  # training mode, batch statistics
        (logits, _), new_stats = apply_fn(state.params, guess_stats[0], x)
        if semi.guess_updates_bn:
          guess_stats[0] = new_stats
        return logits

      def partner(x):
        return eval_logits(batch['partner_params'], batch['partner_batch_stats'], x)

      soft = semi.training_batch(own, partner, batch, augment, aug_rng)
      images = soft.images
    mix = None
    if prepare_images is not None:
      images, mix = prepare_images(images, method_rng)
    meta_images = None
    if uses_meta_set and semi is not None:
      soft_meta = semi.meta_batch(own, batch, augment, meta_aug_rng)
      meta_images = soft_meta.images
    elif uses_meta_set:
      meta_images = augment(batch['meta_image'], meta_aug_rng)
    if semi is not None:  # the training forward's statistics update follows the guesses'
      state = state.replace(batch_stats=guess_stats[0])
    ctx, new_stats = build_context(model, state, batch, images, meta_images,
                                   lr_fn(state.step), dropout_rng, num_classes, meta_bn_train,
                                   mix=mix, semi=semi, soft=soft, soft_meta=soft_meta)
    return ctx, new_stats, method_rng

  return context


def make_train_step(model, method: Method, tx: optax.GradientTransformation,
                    lr_fn: Callable, augment_cfg, mean, std, num_classes: int,
                    meta_bn_train: bool = True, semi: Optional[SemiSupervised] = None):
  """Build train_step(state, batch) -> (state, StepOutput); jit it outside.

  semi: the semi-supervised settings of a co-trained member (`make_context_fn`).
  """
  context = make_context_fn(model, method.uses_meta_set, lr_fn, augment_cfg, mean, std,
                            num_classes, meta_bn_train, prepare_images=method.prepare_images,
                            semi=semi)

  def train_step(state: TrainState, batch: dict):
    ctx, new_stats, method_rng = context(state, batch)
    losses, labels, logits, lr = ctx.losses, ctx.labels, ctx.logits, ctx.lr
    out = method.weights(ctx, state.method_state, batch, method_rng)

    grads = combined_gradient(ctx, out)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    weighted_loss = jnp.sum(out.example_weights * losses) / losses.shape[0]
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(jnp.mean(losses)) & jnp.isfinite(grad_norm)
    if out.batch_stats is not None:
      new_stats = out.batch_stats
    record = state.record
    if record is not None:
      record = record.update(ctx.indices, out.example_weights, jnp.argmax(logits, -1))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              opt_state=opt_state, method_state=out.method_state, record=record)
    new_state = _tree_select(finite, new_state, state)
    metrics = {
        'train_loss': jnp.mean(losses),
        'weighted_loss': weighted_loss,
        'train_accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
        'grad_norm': grad_norm,
        'lr': lr,
        **ctx.semi_metrics,
        **out.metrics,
    }
    return new_state, StepOutput(metrics=metrics, example_weights=out.example_weights,
                                 finite=finite, dispatch=out.dispatch)

  return train_step


def make_eval_logits_fn(model, mean, std, normalised: bool = False):
  """eval_logits(params, batch_stats, images) -> (n, C) logits.

  Eval mode: BatchNorm with running statistics, no dropout; each example's
  logits depend on it alone. images: uint8 (n, H, W, C), normalised here (no
  crop, no flip), or with `normalised=True` float32 images already augmented
  and normalised (the semi-supervised step's views).
  """

  def eval_logits(params, batch_stats, images):
    x = images
    if not normalised:
      x = augment_batch(images, jax.random.PRNGKey(0), crop_padding=0, flip=False,
                        mean=mean, std=std, train=False)
    return model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)

  return eval_logits


def make_example_losses_fn(model, mean, std):
  """example_losses(params, batch_stats, images uint8, labels (n,)) -> (n,) eval-mode losses.

  The per-example cross-entropy of `make_eval_logits_fn`'s logits (the losses
  the co-trained pair divides by, FaMUS supplement Alg. 2).
  """
  eval_logits = make_eval_logits_fn(model, mean, std)

  def example_losses(params, batch_stats, images, labels):
    return cross_entropy(eval_logits(params, batch_stats, images), labels)

  return example_losses


def fit_sums(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> dict:
  """How well the predictions fit the training labels, clean and mislabelled apart.

  logits: (n, C) eval-mode logits of training images; labels: (n, 2) int32,
  column 0 the given (possibly noisy) label, column 1 the true one; mask: (n,)
  real rows. Returns () sums: 'clean_count' / 'noisy_count' (rows whose given
  label is right / wrong), 'clean_fit' / 'noisy_fit' (of those, predicted as
  the given label: on the mislabelled rows this counts memorised labels) and
  'noisy_true' (mislabelled rows predicted as their true class).
  """
  predicted = jnp.argmax(logits, -1)
  given, true = labels[:, 0], labels[:, 1]
  noisy = (given != true) & mask
  clean = (given == true) & mask
  fit = predicted == given
  return {'clean_count': jnp.sum(clean), 'noisy_count': jnp.sum(noisy),
          'clean_fit': jnp.sum(fit & clean), 'noisy_fit': jnp.sum(fit & noisy),
          'noisy_true': jnp.sum((predicted == true) & noisy)}


def fit_scores(totals: dict) -> dict:
  """`fit_sums` totals over the training set -> the eval record's fractions.

  train_fit: accuracy against the given labels; train_fit_clean / train_fit_noisy:
  the same on the correctly / wrongly labelled examples (train_fit_noisy is the
  memorised share of the mislabelled examples); train_true_noisy: the share of
  mislabelled examples predicted as their true class.
  """
  clean, noisy = totals['clean_count'], totals['noisy_count']
  return {'train_fit': (totals['clean_fit'] + totals['noisy_fit']) / max(clean + noisy, 1),
          'train_fit_clean': totals['clean_fit'] / max(clean, 1),
          'train_fit_noisy': totals['noisy_fit'] / max(noisy, 1),
          'train_true_noisy': totals['noisy_true'] / max(noisy, 1)}


def make_fit_step(model, mean, std):
  """fit_step(params, batch_stats, images uint8, labels (n, 2), mask) -> `fit_sums`."""
  eval_logits = make_eval_logits_fn(model, mean, std)

  def fit_step(params, batch_stats, images, labels, mask):
    return fit_sums(eval_logits(params, batch_stats, images), labels, mask)

  return fit_step


def make_eval_step(model, mean, std):
  """eval_step(params, batch_stats, images uint8, labels, mask) -> sums.

  Returns {'correct': (), 'loss_sum': (), 'count': ()}; `mask` (n,) marks real
  examples in a padded last batch.
  """
  eval_logits = make_eval_logits_fn(model, mean, std)

  def eval_step(params, batch_stats, images, labels, mask):
    logits = eval_logits(params, batch_stats, images)
    losses = cross_entropy(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return {'correct': jnp.sum(correct), 'loss_sum': jnp.sum(jnp.where(mask, losses, 0.0)),
            'count': jnp.sum(mask)}

  return eval_step
