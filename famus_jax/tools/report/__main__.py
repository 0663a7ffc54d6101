"""`python -m famus_jax.tools.report RUNS_DIR ... --out=DIR` (the package's `main`)."""

from famus_jax.tools.report import main

if __name__ == '__main__':
  main()
