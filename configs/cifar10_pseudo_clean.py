"""See famus_jax/presets/cifar10_pseudo_clean.py (also `--config=cifar10_pseudo_clean`). A variant of your own: a file whose
get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar10_pseudo_clean import get_config  # noqa: F401  pylint: disable=unused-import
