"""What every method sees and returns inside the one training step.

The step (`famus_jax.train.step`) runs the training forward pass once,
linearised, on the images `Method.prepare_images` returns (the augmented
batch unless a method replaces it, e.g. FSR's one-pass MixUp), and hands the
method a `StepContext`. A method answers with a
`WeightOutput`: per-example coefficients eps_i so that the actual update uses
the gradient of sum_i eps_i L_i (ERM: eps_i = 1/n), optionally an extra
gradient term (FSR's re-labeling and MixUp losses), its new state and its
metrics. Methods differ only there: the loop, the optimiser and the
checkpointing are shared.
"""

import dataclasses
from typing import Any, Callable, Optional, Tuple

import flax
import jax.numpy as jnp

PyTree = Any


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Everything about the current step a weight estimator may use.

  Shapes: n = global batch size, C = classes, D = head input features.

  params, batch_stats, opt_state: the base network's current state.
  step: () int32 step counter (counting from 0). lr: () current learning rate.
  images: (n, H, W, C) float32 images the training forward saw: the augmented
    batch, as replaced by `Method.prepare_images` (FSR's one-pass MixUp: the
    mixed images); labels: (n,) int32 noisy labels; indices: (n,) int32 ids.
  losses: (n,) per-example training losses L_i(w) (no gradient).
  logits: (n, C); features: (n, D) inputs of the classifier head; errors:
    (n, C) softmax(logits) - onehot(labels) = dL_i/dlogits_i (no gradient).
  loss_vec_fn: params -> (n,) per-example losses on this batch (BatchNorm in
    training mode, same augmentation and dropout as `losses`).
  train_jvp: tangent (params-shaped) -> (n,) <grad_w L_i, tangent>, reusing the
    step's linearisation (no new forward pass).
  train_vjp: cotangent (n,) -> params-shaped sum_i c_i grad_w L_i, reusing it.
  logits_vjp: cotangent (n, C) -> params-shaped sum_i <c_i, d logits_i / dw>.
  logits_jvp: tangent (params-shaped) -> (n, C) (d logits / dw) tangent, the
    step's linearisation itself (MLC's logit-space meta gradient).
  val_loss_fn: params -> () mean loss on the meta batch, or None.
  val_outputs_fn: params -> (() mean meta loss, {'logits': (m, C), 'features':
    (m, D), 'labels': (m,)}), the same forward pass as val_loss_fn with its
    outputs (for `jax.value_and_grad(..., has_aux=True)`), or None.
  apply_fn: (params, batch_stats, images, train) -> ((logits, features),
    new_batch_stats); for methods that need other forward passes.
  mix: the `info` that `Method.prepare_images` returned with the images (a
    pytree of arrays, e.g. FSR's MixUp coefficient and partner permutation),
    or None (the default hook: the forward saw the augmented batch itself).
  penalty_cotangent: (n, C) gradient of a batch-level loss term on the
    training logits that the actual update adds unweighted (a co-trained
    member's semi-supervised uniform-prior penalty), or None.
  semi_metrics: the semi-supervised step's diagnostics for the log ({} otherwise).
  """
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  step: jnp.ndarray
  lr: jnp.ndarray
  images: jnp.ndarray
  labels: jnp.ndarray
  indices: jnp.ndarray
  losses: jnp.ndarray
  logits: jnp.ndarray
  features: jnp.ndarray
  errors: jnp.ndarray
  loss_vec_fn: Callable
  train_jvp: Callable
  train_vjp: Callable
  logits_vjp: Callable
  val_loss_fn: Optional[Callable]
  apply_fn: Callable
  num_classes: int
  val_outputs_fn: Optional[Callable] = None
  mix: Optional[PyTree] = None
  penalty_cotangent: Optional[jnp.ndarray] = None
  semi_metrics: dict = dataclasses.field(default_factory=dict)
  logits_jvp: Optional[Callable] = None


@flax.struct.dataclass
class WeightOutput:
  """A method's answer for one step: what the shared step and the trainer read.

  weights: (n,) coefficients eps_i of the actual update's loss sum_i eps_i L_i,
    or None when the method supplies its whole gradient otherwise.
  method_state: the method's new state (a pytree of arrays).
  metrics: dict of scalars and small arrays for the log (method diagnostics).
  example_weights: (n,) the weight each training example of the batch got in
    the actual update, scaled so that uniform weights are 1 (ERM: all ones).
    The trainer reads it for the clean / mislabelled weight statistics.
  logit_cotangent: (n, C) extra cotangent on the step's training logits (a
    loss on the same forward pass, e.g. re-labeling), or None; it shares the
    one backward pass with the weighted loss.
  extra_grads: params-shaped gradient added to the total, or None (a loss on
    another forward pass, e.g. MixUp inputs, or a gradient the method already
    computed, e.g. the virtual step's with `meta.actual_step='reuse'`).
  batch_stats: BatchNorm statistics to keep instead of the training forward
    pass's (when the method's own forward pass should set them), or None.
  dispatch: a small pytree of arrays that the method's host-side `variant` /
    `accepts` read after the step (FaMUS's `DispatchRecord`), or None. The
    trainer copies only this (and the finite flag) to the host every step.
  """
  weights: Optional[jnp.ndarray]
  method_state: PyTree
  metrics: dict
  example_weights: jnp.ndarray
  logit_cotangent: Optional[jnp.ndarray] = None
  extra_grads: Optional[PyTree] = None
  batch_stats: Optional[PyTree] = None
  dispatch: Optional[PyTree] = None


class Method:
  """Interface of a training method (ERM, MW-Net, L2R, FaMUS, FSR).

  Class attributes:
    name: the config value that selects it.
    uses_meta_set: whether the step needs a clean meta batch.
  """
  name = 'base'
  uses_meta_set = False

  def init_state(self, rng, params, num_train: int) -> PyTree:
    """The method's initial state (meta model, samplers, buffers)."""
    del rng, params, num_train
    return {}

  def prepare_images(self, images: jnp.ndarray, rng) -> Tuple[jnp.ndarray, Optional[PyTree]]:
    """The images the step's single training forward runs on, and what the method keeps.

    Called inside the jitted step after augmentation and before the training
    forward, with the same `rng` that `weights` then gets (the step's method
    key; derive sub-keys from it with split / fold_in). Returns (images of the
    same shape and dtype, info): info is a pytree of arrays carried to
    `weights` as `ctx.mix`. The default returns (images, None) and uses no
    randomness, so a method that does not override it sees exactly the
    augmented batch (FSR's one-pass MixUp overrides it).
    """
    del rng
    return images, None

  def weights(self, ctx: StepContext, method_state: PyTree, batch: dict, rng) -> WeightOutput:
    raise NotImplementedError

  def variant(self, dispatch):
    """Key of the compiled step variant to run next (None: the only one).

    Called on the host with the previous step's `WeightOutput.dispatch`
    (copied to the host; None before the first step); methods whose work
    depends on a discrete per-step choice (FaMUS) return a small hashable key
    and `static_variant` gives the step a method specialised to it.
    """
    del dispatch
    return None

  def static_variant(self, key) -> 'Method':
    del key
    return self

  def accepts(self, key, dispatch) -> bool:
    """Whether the step run as variant `key` computed what this step needed.

    A method that chose `key` from the previous step's dispatch record (a
    guess) returns False when this step's own record says it needed another
    variant; the loop then re-runs the same step (same batch, same keys, so
    the same choice) with `variant(dispatch)`. Methods that return False
    sometimes must set `speculative = True` so the loop keeps the pre-step
    state (no donation).
    """
    del key, dispatch
    return True

  speculative = False

  def set_layer_order(self, names) -> None:
    """The model's layer names in forward order, for a model whose names do not follow
    famus_jax.models' scheme (called before `init_state`; methods that work per layer,
    e.g. FaMUS, use it; the default ignores it)."""
    del names

  def on_train_start(self, method_state: PyTree, host_data) -> PyTree:
    """Host-side hook right after `init_state`, with the data (FSR's first dictionary).

    Called for fresh and resumed runs alike: on resume its result is the
    template that the checkpoint's values overwrite.
    """
    del host_data
    return method_state

  def on_epoch_end(self, method_state: PyTree, epoch: int, host_data) -> PyTree:
    """Host-side hook between epochs (FSR refreshes its dictionary here)."""
    del epoch, host_data
    return method_state

  def describe(self) -> dict:
    """JSON-able facts about the method for the run's log (after `init_state`).

    Written once as the 'method' event of metrics.jsonl; e.g. FaMUS's
    candidate layer names, which label its per-layer counts.
    """
    return {}
