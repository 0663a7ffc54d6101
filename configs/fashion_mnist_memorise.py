"""Fashion-MNIST where plain training memorises 60% symmetric noise: the accuracy grid's regime.

The preset famus_jax/presets/fashion_mnist_memorise.py (also `--config=fashion_mnist_memorise`).
A variant of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.fashion_mnist_memorise import get_config  # noqa: F401  pylint: disable=unused-import
