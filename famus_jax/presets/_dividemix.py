"""DivideMix's unlabelled-loss weight lambda_u by data set and noise (Li et al. 2020, appendix).

The paper tunes lambda_u to the noise: CIFAR-10 symmetric 20 / 50 / 80 / 90%:
0 / 25 / 25 / 50, asymmetric 40%: 0; CIFAR-100 symmetric 20 / 50 / 80 / 90%:
25 / 150 / 150 / 150. The co-training presets take theirs from this table;
a run whose noise is overridden on the command line should set
`--config.cotrain.lambda_u` from it too (docs/running.md).
"""

LAMBDA_U = {
    ('cifar10', 'symmetric', 0.2): 0.0,
    ('cifar10', 'symmetric', 0.5): 25.0,
    ('cifar10', 'symmetric', 0.8): 25.0,
    ('cifar10', 'symmetric', 0.9): 50.0,
    ('cifar10', 'asymmetric', 0.4): 0.0,
    ('cifar100', 'symmetric', 0.2): 25.0,
    ('cifar100', 'symmetric', 0.5): 150.0,
    ('cifar100', 'symmetric', 0.8): 150.0,
    ('cifar100', 'symmetric', 0.9): 150.0,
}


def lambda_u(dataset: str, noise_type: str, noise_rate: float) -> float:
  """The paper's lambda_u for this noise; KeyError naming the settings it has otherwise."""
  key = (dataset, noise_type, round(float(noise_rate), 2))
  if key not in LAMBDA_U:
    raise KeyError(f'DivideMix reports no lambda_u for {key}; it has {sorted(LAMBDA_U)}')
  return LAMBDA_U[key]
