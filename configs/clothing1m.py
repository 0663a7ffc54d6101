"""Preset famus_jax/presets/clothing1m.py (also `--config=clothing1m`): its docstring says where
the data goes and which paper settings it follows. A variant of your own: a file whose
get_config() calls this one and changes fields.
"""

from famus_jax.presets.clothing1m import get_config  # noqa: F401  pylint: disable=unused-import
