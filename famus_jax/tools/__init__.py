"""Evidence tools that drive the library, never the other way round.

`benchmark` (step time and memory of every method), `quality` (FaMUS
estimators against the exact meta gradient, as a hook in the training loop),
`report` (plots and tables from workdirs and benchmark files) and
`torch_peer` (the PyTorch reference implementations the benchmark compares
with). Run them as `python -m famus_jax.tools.<name>`.
"""
