"""Learning-rate schedules, from epochs in the config to steps."""

import jax.numpy as jnp
import optax

from famus_jax.errors import ConfigError

SCHEDULES = ('constant', 'multistep', 'cosine')


def create_lr_schedule(lr_cfg, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """step -> learning rate.

  constant: base. multistep: base * decay^k after the k-th boundary
  (`boundaries_epochs`). cosine: base * (1 + cos(pi t / T)) / 2.
  A linear warm-up over `warmup_epochs` comes first when > 0.
  """
  if lr_cfg.schedule not in SCHEDULES:
    raise ConfigError(f'config.lr.schedule={lr_cfg.schedule!r} is not one of {list(SCHEDULES)}')
  warmup = int(round(lr_cfg.warmup_epochs * steps_per_epoch))
  if lr_cfg.schedule == 'constant':
    main = optax.constant_schedule(lr_cfg.base)
  elif lr_cfg.schedule == 'multistep':
    bounds = {int(round(e * steps_per_epoch)) - warmup: lr_cfg.decay
              for e in lr_cfg.boundaries_epochs}
    main = optax.piecewise_constant_schedule(lr_cfg.base, bounds)
  else:
    main = optax.cosine_decay_schedule(lr_cfg.base, max(total_steps - warmup, 1))
  if warmup <= 0:
    return main
  ramp = optax.linear_schedule(0.0, lr_cfg.base, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def as_float(schedule):
  return lambda step: jnp.asarray(schedule(step), jnp.float32)
