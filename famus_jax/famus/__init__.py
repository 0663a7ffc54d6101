"""FaMUS (Xu et al., CVPR 2021): layer-wise, learned sampling of the meta gradient.

`create_famus(config)` builds `method='famus'`: MW-Net, L2R or MLC (config.famus.base)
whose meta gradient is estimated from the layers that gradient samplers switch
on (estimator.py), compiled once per floor bucket and dispatched by the
trainer (method.py). layer_sets.py names the candidate layers and buckets,
samplers.py holds the batched samplers, objective.py L_r and L_g,
layerwise.py the layer-wise meta gradient g'_S for any set S of layers.
"""

from famus_jax.famus.estimator import FamusEstimator, FamusSettings
from famus_jax.famus.layer_sets import LayerSets, build_layer_sets
from famus_jax.famus.layerwise import layerwise_coefficient_gradient, per_layer_contributions
from famus_jax.famus.method import FamusMethod, create_famus, validate
