"""The training methods by name (`config.method`), in one place.

Each factory takes the config and returns a `Method`; adding a method means
adding an entry here, not a new training loop. This module sits above the
method packages (methods/, famus/, fsr/), which never import it.
"""

from famus_jax.errors import ConfigError
from famus_jax.famus.method import create_famus
from famus_jax.fsr.method import create_fsr
from famus_jax.methods.base import Method
from famus_jax.methods.bases import create_base
from famus_jax.methods.erm import ERM, DivideMix
from famus_jax.methods.meta_reweighting import MetaReweighting, ReverseOverReverse, ExactEstimator

META_GRADIENT_PATHS = {'jvp': MetaReweighting, 'reverse_over_reverse': ReverseOverReverse}


def _erm(config):
  del config
  return ERM()


def _dividemix(config):
  del config
  return DivideMix()


def _exact(name):
  def factory(config):
    cls = META_GRADIENT_PATHS[config.meta_gradient]
    return cls(name, create_base(name, config), ExactEstimator(), config.meta)
  return factory


METHODS = {
    'erm': _erm,
    'mwnet': _exact('mwnet'),
    'l2r': _exact('l2r'),
    'mlc': _exact('mlc'),
    'famus': create_famus,
    'fsr': create_fsr,
    'dividemix': _dividemix,
}

# The methods whose step takes a meta batch, so `config.meta_set='pseudo_clean'` can feed it.
PSEUDO_CLEAN_METHODS = ('mwnet', 'l2r', 'famus')


def create_method(config) -> Method:
  """The `Method` that `config.method` names (ConfigError listing the names otherwise)."""
  if config.method not in METHODS:
    raise ConfigError(f'config.method={config.method!r} is not one of {sorted(METHODS)}')
  return METHODS[config.method](config)
