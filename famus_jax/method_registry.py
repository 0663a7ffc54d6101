"""The training methods by name (`config.method`): the catalogue's factories, resolved.

`famus_jax.catalogue` declares each method (its factory as an import path);
this module builds the `Method` a config names. Each factory takes the config
and returns a `Method`; adding a method means adding a catalogue entry and the
method's own module, not a new training loop. This module sits above the
method packages (methods/, famus/, fsr/), which never import it.
"""

import importlib
from typing import Callable

from famus_jax import catalogue
from famus_jax.errors import ConfigError
from famus_jax.methods.base import Method
from famus_jax.methods.bases import create_base
from famus_jax.methods.erm import ERM, DivideMix
from famus_jax.methods.meta_reweighting import ExactEstimator, MetaReweighting, ReverseOverReverse

META_GRADIENT_PATHS = {'jvp': MetaReweighting, 'reverse_over_reverse': ReverseOverReverse}


def create_erm(config) -> Method:
  del config
  return ERM()


def create_dividemix(config) -> Method:
  del config
  return DivideMix()


def create_exact(config) -> Method:
  """The exact meta-gradient method of `config.method` ('mwnet', 'l2r' or 'mlc')."""
  config = catalogue.with_update_period(config)
  cls = META_GRADIENT_PATHS[config.meta_gradient]
  return cls(config.method, create_base(config.method, config), ExactEstimator(), config.meta)


def resolve_factory(method: str) -> Callable:
  """The factory the catalogue declares for `method` (its module imported now)."""
  module, attribute = catalogue.CATALOGUE[method].factory_path
  try:
    return getattr(importlib.import_module(module), attribute)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise
    raise ConfigError(f'config.method={method!r}: its module {module} is not in this '
                      f'install') from e


# The method names (config_check's choices): a live view of the catalogue's keys.
METHODS = catalogue.CATALOGUE.keys()
# The methods whose step takes a meta batch, so `config.meta_set='pseudo_clean'` can feed it.
PSEUDO_CLEAN_METHODS = catalogue.pseudo_clean_methods()


def create_method(config) -> Method:
  """The `Method` that `config.method` names (ConfigError listing the names otherwise)."""
  if config.method not in catalogue.CATALOGUE:
    raise ConfigError(f'config.method={config.method!r} is not one of '
                      f'{sorted(catalogue.CATALOGUE)}')
  return resolve_factory(config.method)(config)
