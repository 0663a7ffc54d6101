"""Training methods, chosen by `config.method`.

Each factory takes the config and returns a `Method`; adding a method means
adding an entry here, not a new training loop.
"""

from famus_jax.errors import ConfigError
from famus_jax.methods.base import Method, StepContext, WeightOutput
from famus_jax.methods.bases import BASES, create_base
from famus_jax.methods.erm import ERM
from famus_jax.methods.meta_reweighting import ExactEstimator, MetaReweighting, ReverseOverReverse


def _erm(config):
  del config
  return ERM()


META_GRADIENT_PATHS = {'jvp': MetaReweighting, 'reverse_over_reverse': ReverseOverReverse}


def _exact(name):
  def factory(config):
    cls = META_GRADIENT_PATHS[config.meta_gradient]
    return cls(name, create_base(name, config), ExactEstimator())
  return factory


def _famus(config):
  from famus_jax.famus.method import create_famus  # pylint: disable=import-outside-toplevel
  return create_famus(config)


def _fsr(config):
  from famus_jax.fsr.method import create_fsr  # pylint: disable=import-outside-toplevel
  return create_fsr(config)


METHODS = {
    'erm': _erm,
    'mwnet': _exact('mwnet'),
    'l2r': _exact('l2r'),
    'famus': _famus,
    'fsr': _fsr,
}


def create_method(config) -> Method:
  if config.method not in METHODS:
    raise ConfigError(f'config.method={config.method!r} is not one of {sorted(METHODS)}')
  return METHODS[config.method](config)
