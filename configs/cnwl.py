"""CNWL red mini-ImageNet at 40% web noise, downsampled to 32x32: the FaMUS supplement setting.

The preset famus_jax/presets/cnwl.py (also `--config=cnwl`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cnwl import get_config  # noqa: F401  pylint: disable=unused-import
