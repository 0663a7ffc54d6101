"""The per-example training record: what a run concluded about each training example.

Kept on the device inside the `TrainState` (so it is checkpointed with the
rest and a resumed run continues it bit for bit) and updated by the shared
step for every method: for each training example i of the N,

  weight_sum[i]  sum over the steps that drew i of its weight in the actual
                 update (`WeightOutput.example_weights`: uniform = 1), so
                 weight_sum / seen is its running mean weight;
  seen[i]        how many times a step drew it (a co-trained member's
                 semi-supervised rows count each of their two views);
  last_pred[i]   the class the training forward last predicted for it
                 (training mode, augmented; FSR's one-pass form: the mixed
                 image it dominates), -1 before the first draw.

A low mean weight is the run's judgement that the label is wrong:
`famus_jax.tools.label_issues` ranks the examples by it (or by FSR's
meta-margin score, or by the pair's clean probability).
"""

import flax
import jax.numpy as jnp


@flax.struct.dataclass
class ExampleRecord:
  """(N,) arrays: weight_sum float32, seen int32, last_pred int32 (module docstring)."""
  weight_sum: jnp.ndarray
  seen: jnp.ndarray
  last_pred: jnp.ndarray

  @classmethod
  def create(cls, num_train: int) -> 'ExampleRecord':
    return cls(weight_sum=jnp.zeros((num_train,), jnp.float32),
               seen=jnp.zeros((num_train,), jnp.int32),
               last_pred=jnp.full((num_train,), -1, jnp.int32))

  def update(self, indices: jnp.ndarray, weights: jnp.ndarray,
             predicted: jnp.ndarray) -> 'ExampleRecord':
    """The record after one step: indices, weights, predicted are (n,) for the step's rows.

    An index that occurs several times in the step adds each of its weights
    and visits; its last_pred is one of its rows' predictions.
    """
    return ExampleRecord(
        weight_sum=self.weight_sum.at[indices].add(weights.astype(jnp.float32)),
        seen=self.seen.at[indices].add(1),
        last_pred=self.last_pred.at[indices].set(predicted.astype(jnp.int32)))
