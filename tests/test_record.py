"""The per-example training record kept in the TrainState (famus_jax/train/record.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from famus_jax.data import build_data
from famus_jax.presets import tiny
from famus_jax.train.record import ExampleRecord
from famus_jax.train.trainer import Run, data_mesh


def test_update_adds_weights_and_visits_of_repeated_indices():
  record = ExampleRecord.create(6)
  indices = jnp.asarray([1, 4, 1, 0], jnp.int32)
  weights = jnp.asarray([0.5, 2.0, 1.5, 0.0], jnp.float32)
  new = record.update(indices, weights, jnp.asarray([3, 2, 3, 7], jnp.int32))
  np.testing.assert_allclose(new.weight_sum, [0.0, 2.0, 0.0, 0.0, 2.0, 0.0])
  np.testing.assert_array_equal(new.seen, [1, 2, 0, 0, 1, 0])
  np.testing.assert_array_equal(new.last_pred, [7, 3, -1, -1, 2, -1])


def test_the_step_records_every_drawn_example():
  """Three MW-Net steps: visits, weights and predictions against the steps' own outputs."""
  c = tiny.get_config()
  data = build_data(c)
  run = Run(c, data, data_mesh())
  state = run.init_state()
  seen = np.zeros(run.num_train, np.int64)
  weight_sum = np.zeros(run.num_train)
  for step in range(3):
    batch = run.batch(step)
    result = run.run_step(state, batch, None)
    idx = np.asarray(batch['index'])
    np.add.at(seen, idx, 1)
    np.add.at(weight_sum, idx, np.asarray(result.output.example_weights, np.float64))
    state = result.state
  record = jax.device_get(state.record)
  np.testing.assert_array_equal(record.seen, seen)
  np.testing.assert_allclose(record.weight_sum, weight_sum, rtol=1e-5)
  assert int(record.seen.sum()) == 3 * c.batch_size
  assert np.all((record.last_pred >= 0) == (seen > 0))
  assert np.any(np.abs(weight_sum[seen > 0] / seen[seen > 0] - 1) > 1e-3)  # not uniform
