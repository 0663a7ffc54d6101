"""The long accuracy schedule on real Fashion-MNIST: long enough for ERM to memorise.

The preset famus_jax/presets/fashion_mnist_long.py (also `--config=fashion_mnist_long`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.fashion_mnist_long import get_config  # noqa: F401  pylint: disable=unused-import
