"""Validation of the `config.fsr` group (every field is declared in famus_jax/config.py).

`check_config` raises ConfigError naming the first bad field.
`famus_jax.config_check.validate` calls it before any data is loaded, and
`create_fsr` calls it too (for code that builds the method directly).
"""

from famus_jax.data import cnwl
from famus_jax.data.datasets import DATASET_SPECS
from famus_jax.errors import ConfigError

WEIGHT_MODES = ('noise', 'longtail')
SCORE_BEFORE = ('train', 'clean')
MIXUP_FORMS = ('two_pass', 'one_pass')
MIXUP_LAMBDAS = ('batch', 'example_max')
MIXUP_LOSSES = ('all', 'weighted')
RELABEL_TARGETS = ('prob_ema', 'logit_ema')


def _num(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _fail(field, value, what):
  raise ConfigError(f'config.fsr.{field}={value!r} {what}')


def num_classes_of(config):
  """Number of classes the config's data set has (None if unknown)."""
  if config.dataset == 'synthetic':
    return int(config.synthetic.num_classes)
  spec = DATASET_SPECS.get(config.dataset)
  return spec.num_classes if spec is not None else None


def image_shape_of(config):
  """(H, W, C) of the config's data set's images (None if unknown)."""
  if config.dataset == 'synthetic':
    s = config.synthetic
    return (int(s.image_size), int(s.image_size), int(s.channels))
  if config.dataset == cnwl.DATASET:  # stored 84x84, or resized (config.cnwl.image_size)
    return cnwl.image_shape(config)
  spec = DATASET_SPECS.get(config.dataset)
  return tuple(spec.image_shape) if spec is not None else None


def check_config(config) -> None:
  """Raise ConfigError for the first invalid `config.fsr` field."""
  if 'fsr' not in config:
    return
  f = config.fsr
  for field in ('dictionary_size', 'reward_batch_size'):
    if not _int(f[field]) or f[field] < 1:
      _fail(field, f[field], 'must be an integer >= 1')
  if not _num(f.meta_lr) or not f.meta_lr > 0:
    _fail('meta_lr', f.meta_lr, 'must be > 0')
  for field in ('score_momentum', 'relabel_momentum', 'label_smoothing'):
    if not _num(f[field]) or not 0.0 <= f[field] < 1.0:
      _fail(field, f[field], 'is outside [0, 1)')
  if not _int(f.warmup_epochs) or f.warmup_epochs < 0:
    _fail('warmup_epochs', f.warmup_epochs, 'must be an integer >= 0')
  if not _int(f.relabel_start_epoch) or f.relabel_start_epoch < -1:
    _fail('relabel_start_epoch', f.relabel_start_epoch,
          'must be an integer >= 0, or -1 (= warmup_epochs)')
  if f.weight_mode not in WEIGHT_MODES:
    _fail('weight_mode', f.weight_mode, f'is not one of {list(WEIGHT_MODES)}')
  if f.score_before not in SCORE_BEFORE:
    _fail('score_before', f.score_before, f'is not one of {list(SCORE_BEFORE)}')
  if not isinstance(f.relabel, bool):
    _fail('relabel', f.relabel, 'must be True or False')
  if not _num(f.relabel_weight) or f.relabel_weight < 0:
    _fail('relabel_weight', f.relabel_weight, 'must be >= 0')
  if not _num(f.mixup_alpha) or f.mixup_alpha < 0:
    _fail('mixup_alpha', f.mixup_alpha, 'must be >= 0 (0 turns MixUp off)')
  if f.mixup_form not in MIXUP_FORMS:
    _fail('mixup_form', f.mixup_form, f'is not one of {list(MIXUP_FORMS)}')
  if f.mixup_form == 'one_pass' and f.mixup_alpha > 0 and f.score_before == 'clean':
    _fail('score_before', f.score_before,
          "needs a clean forward; with config.fsr.mixup_form='one_pass' (and MixUp on) the "
          "step's only forward is the mixed one: use 'train'")
  if f.mixup_losses not in MIXUP_LOSSES:
    _fail('mixup_losses', f.mixup_losses, f'is not one of {list(MIXUP_LOSSES)}')
  if f.mixup_form == 'one_pass' and f.mixup_alpha > 0 and f.mixup_losses == 'weighted':
    _fail('mixup_losses', f.mixup_losses,
          "puts the re-labeling loss on a clean forward with a backward pass; with "
          "config.fsr.mixup_form='one_pass' (and MixUp on) the step's only forward is the "
          "mixed one: use 'all', or mixup_form='two_pass'")
  if f.mixup_lambda not in MIXUP_LAMBDAS:
    _fail('mixup_lambda', f.mixup_lambda, f'is not one of {list(MIXUP_LAMBDAS)}')
  if f.relabel_target not in RELABEL_TARGETS:
    _fail('relabel_target', f.relabel_target, f'is not one of {list(RELABEL_TARGETS)}')
  classes = num_classes_of(config)
  if classes is not None and config.method == 'fsr':
    if f.dictionary_size % classes:
      _fail('dictionary_size', f.dictionary_size,
            f'must be a multiple of the {classes} classes (the dictionary is class-balanced)')
