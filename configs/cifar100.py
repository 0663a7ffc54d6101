"""CIFAR-100, MW-Net's setup: WRN-28-10, batch 100, 40% symmetric noise, 1000 meta images.

The preset famus_jax/presets/cifar100.py (also `--config=cifar100`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar100 import get_config  # noqa: F401  pylint: disable=unused-import
