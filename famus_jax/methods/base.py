"""What every method sees and returns inside the one training step.

The step (`famus_jax.train.step`) builds the rows of its training forward
(the batch preparation, famus_jax/methods/preparation.py: the augmented batch
unless the run replaces it), lets the method replace their images
(`Method.prepare_images`, e.g. FSR's one-pass MixUp), runs the training
forward pass once, linearised, and hands the method a `StepContext`. A method
answers with a `WeightOutput`: per-example coefficients eps_i so that the
actual update uses the gradient of sum_i eps_i L_i (ERM: eps_i = 1/n),
optionally an extra gradient term (FSR's re-labeling and MixUp losses), its
new state and its metrics. Methods differ only there: the loop, the optimiser
and the checkpointing are shared. How the loop picks among several compiled
versions of a method's step (FaMUS's floor buckets) is the method's
`StepVariants` policy; every other method has one version.
"""

import dataclasses
from typing import Any, Callable, Hashable, Optional, Tuple

import flax
import jax.numpy as jnp

PyTree = Any


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Everything about the current step a weight estimator may use.

  Shapes: n = global batch size, C = classes, D = head input features.

  params, batch_stats, opt_state: the base network's current state.
  step: () int32 step counter (counting from 0). lr: () current learning rate.
  images: (n, H, W, C) float32 images the training forward saw: the batch
    preparation's rows (the augmented batch by default), as replaced by
    `Method.prepare_images` (FSR's one-pass MixUp: the mixed images);
    labels: (n,) int32 given (noisy) labels; indices: (n,) int32 ids.
  losses: (n,) per-example training losses L_i(w) (no gradient): the
    cross-entropy of `labels`, or the preparation's `row_losses`.
  logits: (n, C); features: (n, D) inputs of the classifier head; errors:
    (n, C) dL_i/dlogits_i (no gradient), softmax(logits) - onehot(labels)
    for the cross-entropy.
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
    or None (the default hook: the forward saw the prepared rows themselves).
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
  dispatch: a small pytree of arrays, the dispatch record that the method's
    host-side `StepVariants` reads after the step (FaMUS's `DispatchRecord`),
    or None. The trainer copies only this (and the finite flag) to the host
    every step.
  """
  weights: Optional[jnp.ndarray]
  method_state: PyTree
  metrics: dict
  example_weights: jnp.ndarray
  logit_cotangent: Optional[jnp.ndarray] = None
  extra_grads: Optional[PyTree] = None
  batch_stats: Optional[PyTree] = None
  dispatch: Optional[PyTree] = None


class StepVariants:
  """How the loop picks among the compiled versions of a method's step: one, by default.

  A method whose work depends on a discrete per-step choice (FaMUS's floor
  bucket) compiles its step once per value of that choice, keyed by a small
  hashable key, and gives itself a subclass (`Method.variants`). On the host,
  before step t the loop runs `specialise(method, choose(record_{t-1}, t))`
  (compiled once per key), where record_{t-1} is the previous step's
  `WeightOutput.dispatch` (None before the first step) and t is given to a
  policy that `needs_step` (amortised meta updates, `meta_reweighting.py`);
  when `accepts(key, record_t)` says the step's own record needed another key,
  the loop re-runs the same step (same batch, same keys, so the same choice)
  with `choose(record_t, t)`. This default has the one key None and accepts
  every step.
  """
  # Whether a step may be refused (`accepts` False): the loop then keeps the pre-step state
  # for the re-run (no buffer donation).
  speculative = False
  # Whether `choose` needs the number of the step about to run (the run reads it from the
  # state: one scalar to the host per step).
  needs_step = False

  def choose(self, record, step: Optional[int] = None) -> Hashable:
    """Key of the compiled step to run next, from the last dispatch record (or None) and,
    for a policy that `needs_step`, the number of the step about to run (else None).

    Given the record of a step this policy refuses, the key to re-run it exactly.
    """
    del record, step
    return None

  def specialise(self, method: 'Method', key: Hashable) -> 'Method':
    """The method whose step is compiled for `key` (this default: the method itself)."""
    del key
    return method

  def accepts(self, key: Hashable, record) -> bool:
    """Whether the step run as `key` computed what its own dispatch `record` says it needed."""
    del key, record
    return True


class Method:
  """Interface of a training method (ERM, MW-Net, L2R, MLC, FaMUS, FSR, DivideMix).

  Class attributes:
    name: the config value that selects it.
    uses_meta_set: whether the step needs a clean meta batch.
    variants: the `StepVariants` policy of its compiled step (one version by default).
    update_every: the period of its meta-model updates (`config.meta.update_every` for a
      method with a meta model; 1 for the others, which update nothing between steps).
  """
  name = 'base'
  uses_meta_set = False
  variants = StepVariants()
  update_every = 1

  def init_state(self, rng, params, num_train: int) -> PyTree:
    """The method's initial state (meta model, samplers, buffers)."""
    del rng, params, num_train
    return {}

  def prepare_images(self, images: jnp.ndarray, rng) -> Tuple[jnp.ndarray, Optional[PyTree]]:
    """The images the step's single training forward runs on, and what the method keeps.

    Called inside the jitted step after the batch preparation (augmentation)
    and before the training forward, with the same `rng` that `weights` then
    gets (the step's method key; derive sub-keys from it with split /
    fold_in). Returns (images of the same shape and dtype, info): info is a
    pytree of arrays carried to `weights` as `ctx.mix`. The default returns
    (images, None) and uses no randomness, so a method that does not override
    it sees exactly the prepared rows (FSR's one-pass MixUp overrides it).
    """
    del rng
    return images, None

  def weights(self, ctx: StepContext, method_state: PyTree, batch: dict, rng) -> WeightOutput:
    raise NotImplementedError

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
