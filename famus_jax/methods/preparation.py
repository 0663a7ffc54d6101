"""The rows a training step's forward runs on: the step's one batch preparation hook.

Inside the jitted step (`famus_jax.train.step`), after the step keys are
drawn and before the linearised training forward, a `BatchPreparation`
turns the step's batch into a `PreparedBatch`:

  images (n, H, W, C) float32   the rows of the training forward
  labels, indices (n,) int32    each row's given label and training id
  L_i = row_losses(z)_i         per-row loss of the (n, C) logits z
                                (None: cross-entropy of labels)
  meta_images (m, H, W, C)      the validation forward's rows, or None
  L^val = meta_loss(z^val)      () meta loss (None: mean cross-entropy)
  extra_cotangent(z) (n, C)     added to the actual update's logit cotangent
                                unweighted, or None
  metrics(z)                    extra log values of the step, or None

so that the actual update is the gradient of sum_i eps_i L_i(w) plus
<extra_cotangent(z), z(w)> with z and the cotangent held fixed. The method
then sees these rows through `StepContext` (images, labels, indices, losses,
errors dL_i/dz_i) and may still replace the images (`Method.prepare_images`,
FSR's one-pass MixUp). `AugmentedBatch` is the default: the augmented
training and meta images with their integer labels. A co-trained member's
semi-supervised step (famus_jax/cotrain/semi_supervised.py) is another: its
rows are MixUp mixtures of labelled and unlabelled views with soft targets,
and the prior penalty's logit gradient is its extra cotangent.
"""

import dataclasses
from typing import Any, Callable, Optional, Protocol

import jax
import jax.numpy as jnp

PyTree = Any


@dataclasses.dataclass(frozen=True)
class PreparationInputs:
  """What the step hands its batch preparation (all inside the jitted step).

  params, batch_stats: the network's current state; step: () int32 step
    counter. batch: the step's batch dict (famus_jax/train/step.py).
  augment: (uint8 (k, H, W, C) images, key) -> float32 (k, H, W, C), the
    step's augmentation and normalisation.
  apply_fn: (params, batch_stats, float32 images, train) -> ((logits,
    features), new_batch_stats), the step's forward (its dropout key).
  eval_logits: (params, batch_stats, float32 normalised images) -> logits,
    eval mode (running BatchNorm statistics, no dropout).
  aug_rng, meta_aug_rng: the step's keys for the training and meta images.
  uses_meta_set: whether the method has a validation forward (meta batch).
  """
  params: PyTree
  batch_stats: PyTree
  step: jnp.ndarray
  batch: dict
  augment: Callable
  apply_fn: Callable
  eval_logits: Callable
  aug_rng: jax.Array
  meta_aug_rng: jax.Array
  uses_meta_set: bool


@dataclasses.dataclass(frozen=True)
class PreparedBatch:
  """The rows of one step and how they are scored (module docstring; n rows, m meta rows).

  images: (n, H, W, C) float32; labels, indices: (n,) int32.
  row_losses: (n, C) logits -> (n,) L_i, or None = cross-entropy of `labels`
    (whose logit gradient the step writes as softmax - onehot; otherwise it
    is jax.grad of sum_i L_i).
  meta_images: (m, H, W, C) float32 or None (no meta batch); meta_labels: (m,)
    int32 or None; meta_loss: (m, C) logits -> () or None = mean
    cross-entropy of `meta_labels`.
  batch_stats: the BatchNorm statistics the training forward starts from
    (None: the state's).
  extra_cotangent: (n, C) logits -> (n, C) cotangent the actual update adds
    unweighted (a batch-level loss term's logit gradient), or None.
  metrics: (n, C) logits -> dict of () values for the step's log, or None.
  """
  images: jnp.ndarray
  labels: jnp.ndarray
  indices: jnp.ndarray
  row_losses: Optional[Callable] = None
  meta_images: Optional[jnp.ndarray] = None
  meta_labels: Optional[jnp.ndarray] = None
  meta_loss: Optional[Callable] = None
  batch_stats: Optional[PyTree] = None
  extra_cotangent: Optional[Callable] = None
  metrics: Optional[Callable] = None


class BatchPreparation(Protocol):
  """Builds a step's `PreparedBatch` from its `PreparationInputs` (pure, jittable)."""

  def prepare(self, inputs: PreparationInputs) -> PreparedBatch:
    ...


class AugmentedBatch:
  """The default preparation: the augmented batch with its integer labels.

  images = augment(image, aug_rng), meta_images = augment(meta_image,
  meta_aug_rng) when the method has a meta batch; cross-entropy losses.
  """

  def prepare(self, inputs: PreparationInputs) -> PreparedBatch:
    batch = inputs.batch
    images = inputs.augment(batch['image'], inputs.aug_rng)
    meta_images = meta_labels = None
    if inputs.uses_meta_set:
      meta_images = inputs.augment(batch['meta_image'], inputs.meta_aug_rng)
      meta_labels = batch['meta_label']
    return PreparedBatch(images=images, labels=batch['label'], indices=batch['index'],
                         meta_images=meta_images, meta_labels=meta_labels)
