"""See famus_jax/presets/fashion_mnist_pseudo_clean.py (also `--config=fashion_mnist_pseudo_clean`). A variant of your own: a file whose
get_config() calls this one and changes fields.
"""

from famus_jax.presets.fashion_mnist_pseudo_clean import get_config  # noqa: F401  pylint: disable=unused-import
