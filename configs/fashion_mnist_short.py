"""The accuracy-grid schedule on real Fashion-MNIST, sized for a 2-core CPU.

The preset famus_jax/presets/fashion_mnist_short.py (also `--config=fashion_mnist_short`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.fashion_mnist_short import get_config  # noqa: F401  pylint: disable=unused-import
