"""FSR on real Fashion-MNIST (offline), 40% symmetric noise, no clean meta set.

The preset famus_jax/presets/fashion_mnist_fsr.py (also `--config=fashion_mnist_fsr`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.fashion_mnist_fsr import get_config  # noqa: F401  pylint: disable=unused-import
