"""Real Fashion-MNIST, offline (Debian's dataset-fashion-mnist), 40% symmetric noise.

The preset famus_jax/presets/fashion_mnist.py (also `--config=fashion_mnist`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.fashion_mnist import get_config  # noqa: F401  pylint: disable=unused-import
