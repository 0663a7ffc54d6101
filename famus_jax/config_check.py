"""Config validation: every bad value is reported with its field and what is allowed.

Runs before any data is loaded or compiled, so a typo costs a second, not a
compile: the entry points (famus-train, the Python API, the tools) call
`validate` before they hand a config to the trainer. Name checks use the
registries of the modules that own the names.
"""

from famus_jax.cotrain.pair import DIVIDEMIX, META_SETS, co_trained, semi_supervised
from famus_jax.data import DATASETS, NOISE_TYPES, SOURCES
from famus_jax.data.augment import check_augment_config
from famus_jax.data.image_folder import check_config as check_image_folder_config
from famus_jax.data.real_noise import check_config as check_real_noise_config
from famus_jax.errors import ConfigError
from famus_jax.famus.method import validate as check_famus_config
from famus_jax.fsr.config import check_config as check_fsr_config
from famus_jax.method_registry import METHODS, PSEUDO_CLEAN_METHODS
from famus_jax.methods.meta_reweighting import ACTUAL_STEPS, AMORTISED_LRS
from famus_jax.models import MODELS
from famus_jax.train.checkpoint import RESUME_MODES
from famus_jax.train.distributed import check_config as check_distributed_config
from famus_jax.train.schedules import SCHEDULES
from famus_jax.train.tensorboard import check_available as check_tensorboard_available


def _choice(config, field, allowed):
  value = config[field]  # a dotted name reads the nested field
  if value not in allowed:
    raise ConfigError(f'config.{field}={value!r} is not one of {sorted(allowed)}')


def _range(config, field, low, high, low_open=False, high_open=True):
  value = config[field]
  ok_low = value > low if low_open else value >= low
  ok_high = value < high if high_open else value <= high
  if not (ok_low and ok_high):
    lb = '(' if low_open else '['
    hb = ')' if high_open else ']'
    raise ConfigError(f'config.{field}={value!r} is outside {lb}{low}, {high}{hb}')


def check_update_every(config) -> None:
  """config.meta.update_every: None (the method's own period) or an int >= 1 (methods without
  a meta model ignore it)."""
  every = config.meta.update_every
  if every is None:
    return
  if isinstance(every, bool) or not isinstance(every, int) or every < 1:
    raise ConfigError(f'config.meta.update_every={every!r} must be an integer >= 1 '
                      '(or None: the method\'s own period)')


def validate(config) -> None:
  """Raise ConfigError naming the first invalid field."""
  _choice(config, 'dataset', DATASETS)
  _choice(config, 'data_source', SOURCES)
  _choice(config, 'noise_type', NOISE_TYPES)
  _choice(config, 'method', METHODS)
  _choice(config, 'model', MODELS)
  _choice(config, 'lr.schedule', SCHEDULES)
  _range(config, 'noise_rate', 0.0, 1.0)
  _range(config, 'imbalance_factor', 1.0, float('inf'))
  for field in ('batch_size', 'meta_batch_size', 'eval_batch_size', 'log_every',
                'eval_every', 'checkpoint_every', 'keep_checkpoints'):
    _range(config, field, 1, float('inf'))
  for field in ('num_meta', 'train_subset', 'num_steps', 'num_epochs', 'diagnostics_every',
                'weights_log_every', 'prefetch_batches'):
    _range(config, field, 0, float('inf'))
  if config.num_steps == 0 and config.num_epochs == 0:
    raise ConfigError('config.num_steps and config.num_epochs are both 0: set one of them')
  _range(config, 'quality.every', 1, float('inf'))
  _range(config, 'quality.random_draws', 1, float('inf'))
  _range(config, 'lr.base', 0.0, float('inf'), low_open=True)
  _range(config, 'optimizer.momentum', 0.0, 1.0)
  _range(config, 'optimizer.weight_decay', 0.0, float('inf'))
  _range(config, 'mwnet.lr', 0.0, float('inf'), low_open=True)
  _choice(config, 'l2r.zero_sum', ('uniform', 'zero'))
  check_mlc_config(config)
  _choice(config, 'meta_gradient', ('jvp', 'reverse_over_reverse'))
  _choice(config, 'meta.actual_step', ACTUAL_STEPS)
  check_update_every(config)
  _choice(config, 'meta.amortised_lr', AMORTISED_LRS)
  _choice(config, 'resume', RESUME_MODES)
  _choice(config, 'tensorboard', (False, True))
  if config.tensorboard:
    check_tensorboard_available()
  check_augment_config(config)
  check_image_folder_config(config)
  check_real_noise_config(config)
  _range(config, 'base_width', 1, float('inf'))
  check_famus_config(config)
  check_fsr_config(config)
  check_cotrain_config(config)
  check_distributed_config(config, single_process=(
      f'the co-trained pair (config.meta_set={config.meta_set!r}, '
      f'config.method={config.method!r})' if co_trained(config) else None))


def check_mlc_config(config) -> None:
  """The `config.mlc` group (famus_jax/methods/mlc.py), and what MLC cannot be combined with."""
  _range(config, 'mlc.init_diagonal', 0.0, 1.0, low_open=True)
  _range(config, 'mlc.lr', 0.0, float('inf'), low_open=True)
  _range(config, 'mlc.momentum', 0.0, 1.0)
  _range(config, 'mlc.weight_decay', 0.0, float('inf'))
  if config.method == 'famus' and config.famus.base == 'mlc' and semi_supervised(config):
    raise ConfigError("config.famus.base='mlc' corrects the loss of the given integer labels; "
                      'it cannot train on the soft targets of config.cotrain.semi_supervised=True'
                      ' (set it to False, or use another famus.base)')


def check_cotrain_config(config) -> None:
  """`config.meta_set` and the `config.cotrain` group (FaMUS supplement Alg. 2)."""
  _choice(config, 'meta_set', META_SETS)
  _range(config, 'cotrain.gmm_max_iter', 1, float('inf'))
  _range(config, 'cotrain.gmm_tol', 0.0, float('inf'), low_open=True)
  _range(config, 'cotrain.gmm_reg_covar', 0.0, float('inf'), low_open=True)
  _range(config, 'cotrain.clean_threshold', 0.0, 1.0)
  _range(config, 'cotrain.min_pseudo_clean', 0, float('inf'))
  _range(config, 'cotrain.warmup_epochs', 0, float('inf'))
  _choice(config, 'cotrain.semi_supervised', (False, True))
  _choice(config, 'cotrain.guess_updates_bn', (False, True))
  _range(config, 'cotrain.labelled_threshold', 0.0, 1.0)
  _range(config, 'cotrain.unlabelled_batch_size', 0, float('inf'))
  _range(config, 'cotrain.sharpen_temperature', 0.0, float('inf'), low_open=True)
  _range(config, 'cotrain.mixup_alpha', 0.0, float('inf'), low_open=True)
  _range(config, 'cotrain.lambda_u', 0.0, float('inf'))
  _range(config, 'cotrain.rampup_epochs', 0.0, float('inf'), low_open=True)
  _range(config, 'cotrain.prior_penalty_weight', 0.0, float('inf'))
  if not co_trained(config):
    if config.cotrain.semi_supervised:
      raise ConfigError('config.cotrain.semi_supervised=True needs the co-trained pair: set '
                        "config.meta_set='pseudo_clean' (with one of "
                        f'{sorted(PSEUDO_CLEAN_METHODS)}) or config.method={DIVIDEMIX!r}')
    return
  co_trainable = PSEUDO_CLEAN_METHODS + (DIVIDEMIX,)
  if config.meta_set == 'pseudo_clean' and config.method not in co_trainable:
    raise ConfigError(f'config.meta_set={config.meta_set!r} trains two networks on each '
                      f'other\'s divisions: config.method={config.method!r} is not one of '
                      f'{sorted(co_trainable)}')
  if config.cotrain.warmup_epochs < 1:
    cause = (f'config.method={config.method!r}' if config.method == DIVIDEMIX
             else f'config.meta_set={config.meta_set!r}')
    raise ConfigError(f'config.cotrain.warmup_epochs={config.cotrain.warmup_epochs!r} must be '
                      f'>= 1 with {cause} (the first division needs trained networks)')
