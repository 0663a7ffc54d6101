"""FSR on CIFAR-10 with 40% symmetric noise (FSR paper Sec. 5.1, Table 4 'CIFAR (noise)').

The preset famus_jax/presets/cifar10_fsr_noise.py (also `--config=cifar10_fsr_noise`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar10_fsr_noise import get_config  # noqa: F401  pylint: disable=unused-import
