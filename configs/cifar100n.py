"""CIFAR-100N (human labels, 40.2% wrong) with the cifar10n preset's FaMUS supplement setting.

The preset famus_jax/presets/cifar100n.py (also `--config=cifar100n`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar100n import get_config  # noqa: F401  pylint: disable=unused-import
