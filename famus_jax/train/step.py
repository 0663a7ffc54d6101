"""The one training step shared by every method, and the evaluation step.

`train_step(state, batch) -> (state, StepOutput)` is pure; `make_train_step`
binds the static parts (model, method, optimiser, schedule, augmentation and
the batch preparation). The step

  1. builds the rows of the training forward from the batch (key:
     fold_in(state.rng, state.step)): the batch preparation hook
     (famus_jax/methods/preparation.py; by default the batch augmented on the
     device), then `Method.prepare_images` (the identity by default; FSR's
     one-pass MixUp);
  2. runs the training forward pass once, linearised (`jax.linearize`), which
     yields the per-example losses L_i of the preparation, a JVP and (by
     transposition) a VJP;
  3. asks the method for per-example coefficients eps (and optional extra
     gradients) given that context;
  4. applies the real optimiser to grad_w sum_i eps_i L_i(w) (+ the method's
     and the preparation's extra terms);
  5. keeps the old state if the loss or gradient is not finite, and says so in
     `StepOutput.finite` (the loop stops with the step number).

Batch dict (global shapes; the leading axis is sharded over devices):
  image (n, H, W, C) uint8, label (n,) int32, index (n,) int32 and, for
  methods with a meta set, meta_image (m, H, W, C) uint8, meta_label (m,).
  A batch preparation may read further entries (the co-trained member's
  semi-supervised step: famus_jax/cotrain/semi_supervised.py).
"""

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from famus_jax.data import augment_batch
from famus_jax.data.augment import train_augment_fn
from famus_jax.methods.base import Method, StepContext
from famus_jax.methods.coefficient_space import actual_gradient
from famus_jax.methods.preparation import (AugmentedBatch, BatchPreparation, PreparationInputs,
                                           PreparedBatch)
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
                  prepared: Optional[PreparedBatch] = None):
  """Run the training forward pass once, linearised, and wrap it in a StepContext.

  images: (n, H, W, C) float32 (augmented, and prepared by the method);
  meta_images: (m, H, W, C) float32 or None; meta_bn_train: the validation
  forward pass uses batch statistics (as the reference code, whose meta model
  is in training mode) or running ones; mix: `Method.prepare_images`'s info,
  kept as `ctx.mix`. prepared: the batch preparation whose rows `images` and
  `meta_images` are; its labels, indices and losses (`row_losses`,
  `meta_loss`) replace the batch's labels and cross-entropy (None: the
  batch's own, `AugmentedBatch`). Returns (ctx, new_batch_stats from the
  training forward). BatchNorm statistics of every other forward pass
  (virtual, validation) are thrown away.
  """
  apply_fn = make_apply_fn(model, dropout_rng)
  if prepared is None:
    prepared = PreparedBatch(images=images, labels=batch['label'], indices=batch['index'],
                             meta_images=meta_images, meta_labels=batch.get('meta_label'))
  labels, indices = prepared.labels, prepared.indices
  row_losses = prepared.row_losses
  if row_losses is None:
    def loss_of_logits(z):
      return cross_entropy(z, labels)
  else:
    loss_of_logits = row_losses

  def logits_and_aux(params):
    (logits, features), new_stats = apply_fn(params, state.batch_stats, images)
    return logits, (features, new_stats)

  logits, logits_jvp, (features, new_stats) = jax.linearize(
      logits_and_aux, state.params, has_aux=True)
  transpose = jax.linear_transpose(logits_jvp, state.params)
  losses = loss_of_logits(logits)
  if row_losses is None:
    # dL_i/dlogits_i = softmax_i - onehot_i: turns logit-space products into loss-space ones.
    errors = jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1],
                                                     dtype=logits.dtype)
  else:
    errors = jax.grad(lambda z: jnp.sum(loss_of_logits(z)))(logits)

  def logits_vjp(cotangent):
    return transpose(cotangent)[0]

  val_loss_fn = val_outputs_fn = None
  if meta_images is not None:
    meta_labels = prepared.meta_labels

    def val_loss_of_logits(z):
      if prepared.meta_loss is None:
        return jnp.mean(cross_entropy(z, meta_labels))
      return prepared.meta_loss(z)

    def val_loss_fn(params):
      (val_logits, _), _ = apply_fn(params, state.batch_stats, meta_images, meta_bn_train)
      return val_loss_of_logits(val_logits)

    def val_outputs_fn(params):
      (val_logits, val_features), _ = apply_fn(params, state.batch_stats, meta_images,
                                               meta_bn_train)
      loss = val_loss_of_logits(val_logits)
      return loss, {'logits': val_logits, 'features': val_features, 'labels': meta_labels}

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
      val_outputs_fn=val_outputs_fn, mix=mix)
  return ctx, new_stats


def combined_gradient(ctx: StepContext, out, extra_cotangent=None):
  """grad_w of sum_i eps_i L_i + <logit cotangent, logits> (+ extra), one backward pass.

  extra_cotangent: (n, C) the batch preparation's `extra_cotangent` on the
  training logits (a co-trained member's uniform-prior penalty), or None; it
  joins the same backward pass, unweighted (`coefficient_space.actual_gradient`).
  """
  return actual_gradient(ctx, out.weights, out.extra_grads,
                         (out.logit_cotangent, extra_cotangent))


def _prepared_context_fn(model, uses_meta_set: bool, lr_fn: Callable, augment_cfg, mean, std,
                         num_classes: int, meta_bn_train: bool,
                         prepare_images: Optional[Callable],
                         preparation: Optional[BatchPreparation]):
  """`make_context_fn`'s context, also returning the step's `PreparedBatch`."""
  augment = train_augment_fn(augment_cfg, mean, std)  # config.augment.crop: pad | resized
  eval_logits = make_eval_logits_fn(model, mean, std, normalised=True)
  preparation = AugmentedBatch() if preparation is None else preparation

  def context(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, meta_aug_rng, dropout_rng, method_rng = jax.random.split(rng, 4)
    prepared = preparation.prepare(PreparationInputs(
        params=state.params, batch_stats=state.batch_stats, step=state.step, batch=batch,
        augment=augment, apply_fn=make_apply_fn(model, dropout_rng), eval_logits=eval_logits,
        aug_rng=aug_rng, meta_aug_rng=meta_aug_rng, uses_meta_set=uses_meta_set))
    images, mix = prepared.images, None
    if prepare_images is not None:
      images, mix = prepare_images(images, method_rng)
    if prepared.batch_stats is not None:  # the training forward's update follows the preparation's
      state = state.replace(batch_stats=prepared.batch_stats)
    ctx, new_stats = build_context(model, state, batch, images, prepared.meta_images,
                                   lr_fn(state.step), dropout_rng, num_classes, meta_bn_train,
                                   mix=mix, prepared=prepared)
    return ctx, new_stats, method_rng, prepared

  return context


def make_context_fn(model, uses_meta_set: bool, lr_fn: Callable, augment_cfg, mean, std,
                    num_classes: int, meta_bn_train: bool = True,
                    prepare_images: Optional[Callable] = None,
                    preparation: Optional[BatchPreparation] = None):
  """context(state, batch) -> (ctx, new_batch_stats, method_rng): steps 1-2 of the step.

  The augmentation, dropout and method keys are fixed by (state.rng,
  state.step), so a diagnostic tool calling this on the same state and batch
  sees exactly the step's context (e.g. `famus_jax.tools.quality`).
  prepare_images: the method's `Method.prepare_images(images, method_rng) ->
  (images, info)`, run between the batch preparation and the forward; None =
  identity. preparation: the `BatchPreparation` that builds the rows from the
  batch (None: `AugmentedBatch`, the augmented images; a co-trained member's
  semi-supervised step: `famus_jax.cotrain.semi_supervised.SemiSupervised`).
  """
  prepared_context = _prepared_context_fn(model, uses_meta_set, lr_fn, augment_cfg, mean, std,
                                          num_classes, meta_bn_train, prepare_images,
                                          preparation)

  def context(state: TrainState, batch: dict):
    ctx, new_stats, method_rng, _ = prepared_context(state, batch)
    return ctx, new_stats, method_rng

  return context


def make_train_step(model, method: Method, tx: optax.GradientTransformation,
                    lr_fn: Callable, augment_cfg, mean, std, num_classes: int,
                    meta_bn_train: bool = True, preparation: Optional[BatchPreparation] = None):
  """Build train_step(state, batch) -> (state, StepOutput); jit it outside.

  preparation: the step's batch preparation (`make_context_fn`); its
  `extra_cotangent` joins the actual update's backward pass and its `metrics`
  the step's metrics.
  """
  context = _prepared_context_fn(model, method.uses_meta_set, lr_fn, augment_cfg, mean, std,
                                 num_classes, meta_bn_train, method.prepare_images, preparation)

  def train_step(state: TrainState, batch: dict):
    ctx, new_stats, method_rng, prepared = context(state, batch)
    losses, labels, logits, lr = ctx.losses, ctx.labels, ctx.logits, ctx.lr
    extra_cotangent = extra_metrics = None
    if prepared.extra_cotangent is not None:
      extra_cotangent = jax.lax.stop_gradient(prepared.extra_cotangent(logits))
    if prepared.metrics is not None:
      extra_metrics = prepared.metrics(logits)
    out = method.weights(ctx, state.method_state, batch, method_rng)

    grads = combined_gradient(ctx, out, extra_cotangent)
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
        **(extra_metrics or {}),
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
