"""Tiny synthetic run for tests and smoke runs: seconds on a CPU.

The preset famus_jax/presets/tiny.py (also `--config=tiny`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.tiny import get_config  # noqa: F401  pylint: disable=unused-import
