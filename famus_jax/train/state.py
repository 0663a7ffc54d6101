"""The training state: one pytree of arrays, saved whole in every checkpoint."""

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from famus_jax.models import layer_names, layer_names_in_call_order
from famus_jax.train.record import ExampleRecord

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """step: () int32, counts finished steps from 0.
  params, batch_stats: the base network's variables.
  opt_state: the real optimiser's state (momentum, schedule count).
  method_state: the method's own arrays (meta model and its optimiser,
    FaMUS samplers, FSR dictionary and per-example EMAs).
  rng: the run's root key; step keys are `fold_in(rng, step)`.
  record: the per-example training record (`famus_jax.train.record`), or
    None (a state built by hand; the step then keeps none).
  """
  step: jnp.ndarray
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  method_state: PyTree
  rng: jnp.ndarray
  record: Optional[ExampleRecord] = None


def create_optimizer(config, lr_fn) -> optax.GradientTransformation:
  """SGD with momentum and L2 weight decay added to the gradient (PyTorch style)."""
  return optax.chain(
      optax.add_decayed_weights(config.optimizer.weight_decay),
      optax.sgd(lr_fn, momentum=config.optimizer.momentum,
                nesterov=config.optimizer.nesterov))


def create_train_state(rng, model, method, tx, image_shape, num_train: int) -> TrainState:
  """Initialise the model (on one dummy image batch), optimiser and method."""
  init_rng, method_rng, run_rng = jax.random.split(rng, 3)
  variables = model.init({'params': init_rng, 'dropout': init_rng},
                         jnp.zeros((2,) + tuple(image_shape), jnp.float32), train=False)
  params = variables['params']
  try:
    layer_names(params)
  except ValueError:  # a model outside famus_jax.models' naming scheme: order by its calls
    method.set_layer_order(layer_names_in_call_order(
        model, variables, jnp.zeros((2,) + tuple(image_shape), jnp.float32)))
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(params),
      method_state=method.init_state(method_rng, params, num_train),
      rng=run_rng,
      record=ExampleRecord.create(num_train))
