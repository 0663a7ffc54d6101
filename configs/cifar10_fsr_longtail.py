"""FSR on long-tailed CIFAR-10, imbalance factor 100, clean labels (FSR paper Sec. 5.2).

The preset famus_jax/presets/cifar10_fsr_longtail.py (also `--config=cifar10_fsr_longtail`). A variant
of your own: a file whose get_config() calls this one and changes fields.
"""

from famus_jax.presets.cifar10_fsr_longtail import get_config  # noqa: F401  pylint: disable=unused-import
