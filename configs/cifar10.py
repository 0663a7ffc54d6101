"""CIFAR-10, MW-Net's setup: WRN-28-10, batch 100, 40% symmetric noise, 1000 meta images.

The preset famus_jax/presets/cifar10.py (also `--config=cifar10`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar10 import get_config  # noqa: F401  pylint: disable=unused-import
