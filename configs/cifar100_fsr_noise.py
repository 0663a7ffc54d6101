"""FSR on CIFAR-100 with 40% symmetric noise (FSR paper Sec. 5.1, Table 4 'CIFAR (noise)').

The preset famus_jax/presets/cifar100_fsr_noise.py (also `--config=cifar100_fsr_noise`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar100_fsr_noise import get_config  # noqa: F401  pylint: disable=unused-import
