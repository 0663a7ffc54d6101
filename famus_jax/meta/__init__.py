"""The meta-gradient core: exact layer-wise meta gradient and the meta models."""

from famus_jax.meta.meta_gradient import (
    coefficient_gradient, directional_losses, flat_params, layer_of,
    per_layer_coefficient_gradients, reference_coefficient_gradient,
    restricted_value_and_grad, select_keys, sgd_virtual_params, unflat_params)
from famus_jax.meta.weight_net import WeightNet
