"""Named configurations shipped with the package (`famus-train --config=NAME`).

Each module `famus_jax/presets/<name>.py` has a `get_config()` that starts
from the schema `famus_jax.config.get_config()` (or another preset) and
changes a few fields. The files in the repository's top-level `configs/`
directory re-export these, so `--config=configs/<name>.py` and
`--config=<name>` give the same configuration.
"""

import os

PRESET_DIR = os.path.dirname(os.path.abspath(__file__))


def preset_names() -> list:
  """Names of the shipped presets (the module names in this package)."""
  return sorted(f[:-3] for f in os.listdir(PRESET_DIR)
                if f.endswith('.py') and not f.startswith('_'))


def preset_path(name: str) -> str:
  """The file of preset `name` (for `ml_collections.config_flags`), or ValueError."""
  if name not in preset_names():
    raise ValueError(f'no preset named {name!r}; the presets are {preset_names()}')
  return os.path.join(PRESET_DIR, f'{name}.py')
