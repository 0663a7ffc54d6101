"""The method interface and the meta re-weighting building blocks.

`base` (StepContext, WeightOutput, Method, StepVariants), `preparation`
(the step's batch preparation hook: BatchPreparation, PreparedBatch,
AugmentedBatch), `erm`, `bases` (the MW-Net, L2R and MLC bases),
`coefficient_space` (per-example or logit-space virtual coefficients), `mlc`
(meta loss correction), `meta_reweighting` (a base + a meta-gradient
estimator). The methods are chosen by name in
`famus_jax.method_registry`.
"""

from famus_jax.methods.base import Method, StepContext, StepVariants, WeightOutput
from famus_jax.methods.bases import BASES, create_base
from famus_jax.methods.erm import ERM
from famus_jax.methods.meta_reweighting import ExactEstimator, MetaReweighting, ReverseOverReverse
