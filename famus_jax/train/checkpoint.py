"""Checkpoints: Orbax `CheckpointManager` in <workdir>/checkpoints.

Each checkpoint holds the whole `TrainState` (params, batch stats, optimiser
state, method state, root rng, step) and a JSON record of the host-side
progress (best accuracy so far, timing and weight statistics, epoch position).
Orbax writes a step into a temporary directory and renames it when complete,
so a crash during a save leaves the previous checkpoint as the latest one.
"""

import os
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Save / restore-latest for one workdir."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'progress'))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, progress: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)))
    self.manager.wait_until_finished()

  def restore(self, template_state, step: Optional[int] = None):
    """(state, progress) of `step` (default: latest), shaped like the template."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
    return restored['state'], restored['progress']

  def close(self) -> None:
    self.manager.close()


def to_host(tree):
  """Device arrays -> numpy (for JSON-able progress records)."""
  return jax.tree.map(np.asarray, jax.device_get(tree))
