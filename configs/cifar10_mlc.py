"""MLC on CIFAR-10 with the FaMUS supplement's setting (WRN-40-2, batch 64, meta lr 1e-5).

The preset famus_jax/presets/cifar10_mlc.py (also `--config=cifar10_mlc`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar10_mlc import get_config  # noqa: F401  pylint: disable=unused-import
