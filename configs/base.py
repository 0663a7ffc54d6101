"""Every configuration field with its default: the schema in famus_jax/config.py.

Every other config starts from it; `--config=configs/base.py` is the schema
itself (MW-Net on CIFAR-10 with WRN-28-10).
"""

from famus_jax.config import get_config  # noqa: F401  pylint: disable=unused-import
