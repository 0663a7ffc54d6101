"""famus_jax: learning from noisy labels by learned sample re-weighting, in JAX / Flax.

The Python API (famus_jax/api.py), importable from here:

  Classifier   a backbone of yours plus the linear 'head' every method needs
  arrays_data  in-memory uint8 images and labels as the trainer's data splits
  Learner      one method's compiled step on your model and data, for your own loop
  fit          the trainer's loop (checkpoints, resume, evaluation) on your model and data
  config_for   the validated config a Learner / fit uses

The command line (`python main.py --config=...`, `famus-train`) and the
tools use the same package; see README.md.
"""

__version__ = '0.1.0'

_API = ('Classifier', 'Learner', 'arrays_data', 'config_for', 'fit')
__all__ = ['__version__', *_API]


def __getattr__(name):
  # The API is imported on first use, so `import famus_jax.<module>` stays light.
  if name in _API:
    from famus_jax import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
