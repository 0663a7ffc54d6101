"""CIFAR-10N, worst human label set (40.2% wrong), the FaMUS supplement's training setting.

The preset famus_jax/presets/cifar10n.py (also `--config=cifar10n`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar10n import get_config  # noqa: F401  pylint: disable=unused-import
