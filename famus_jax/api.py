"""famus_jax from your own code: your Flax model, your arrays, any method, your loop or ours.

    import famus_jax

    model = famus_jax.Classifier(MyBackbone(), num_classes=10)   # adds the linear 'head'
    data = famus_jax.arrays_data(x_train, y_noisy, num_classes=10,
                                 meta_images=x_meta, meta_labels=y_meta,   # clean meta set
                                 test_images=x_test, test_labels=y_test)
    learner = famus_jax.Learner(model, data, method='famus', batch_size=100)
    state = learner.init_state()
    for step in range(learner.total_steps):                  # your loop
      state, out = learner.step(state, learner.batch(step))  # out.example_weights, out.metrics
      if (step + 1) % learner.steps_per_epoch == 0:
        state = learner.end_epoch(state, (step + 1) // learner.steps_per_epoch)

    summary = famus_jax.fit(model, data, workdir='runs/mine', method='mwnet')  # or our loop

The model contract. A method needs the logits and the inputs of the final
linear layer (FSR's head-only meta step, FaMUS's L_g) and that layer's
parameters under the name 'head'. `Classifier(backbone, num_classes)` gives
exactly that for any backbone module `backbone(x, train=...) -> (n, ...)`
features; a module of your own that already takes `(x, train,
return_features=False)`, returns `(logits, features)` when asked and names
its last Dense 'head' is used as it is. BatchNorm layers keep their running
statistics in the 'batch_stats' collection and dropout draws from the
'dropout' rng, as in every Flax example. FaMUS's layers are the model's
leaf modules in the order they are called; its default candidates are the
top quarter of them below the head (at least two; for famus_jax's own
residual networks: the last stage), overridable by regexes of layer names
(`famus.candidates`).

Images are uint8 (N, H, W, C) arrays, as the trainer's: the step crops,
flips (`augment.*`, off by default here) and normalises them with the
training set's per-channel mean and standard deviation. Every field of
`famus_jax.config` can be set by its dotted name, e.g.
`Learner(model, data, method='famus', **{'famus.target_active': 2})` or as
a keyword where the name has no dot (`num_epochs=10`).
"""

from typing import Optional

from flax import traverse_util
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from famus_jax import config as schema
from famus_jax import config_check
from famus_jax.data import DataSplits
from famus_jax.data.corruptions import realised_noise_rate
from famus_jax.data.pipeline import channel_stats
from famus_jax.errors import ConfigError
from famus_jax.train.step import make_eval_logits_fn
from famus_jax.train.trainer import create_run, data_mesh, train_and_evaluate

# What the Python API changes in the schema's defaults for data it knows nothing about: no
# random crops or flips (they are the CIFAR recipe; turn them on by their fields).
API_DEFAULTS = {'augment.crop_padding': 0, 'augment.flip': False}


class Classifier(nn.Module):
  """backbone(x, train) -> features (n, ...), flattened, then the linear layer 'head' -> logits.

  `__call__(x, train, return_features=False)` returns the (n, num_classes)
  logits, or (logits, (n, D) features) with return_features: the model
  contract every famus_jax method relies on (module docstring).
  """
  backbone: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    features = self.backbone(x, train=train)
    features = features.reshape((features.shape[0], -1))
    logits = nn.Dense(self.num_classes, name='head')(features)
    return (logits, features) if return_features else logits


def _as_images(images, name: str) -> np.ndarray:
  x = np.asarray(images)
  if x.dtype != np.uint8:
    raise ValueError(f'{name} must be uint8 images (pixels 0-255), not {x.dtype}')
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f'{name} must have the shape (N, H, W, C) or (N, H, W), not {x.shape}')
  return x


def _as_labels(labels, count: int, num_classes: int, name: str) -> np.ndarray:
  y = np.asarray(labels)
  if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'{name} must be ({count},) integers, not {y.dtype} {y.shape}')
  if count and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'{name} must lie in [0, {num_classes}); found [{y.min()}, {y.max()}]')
  return y.astype(np.int32)


def arrays_data(train_images, train_labels, *, num_classes: int, meta_images=None,
                meta_labels=None, test_images=None, test_labels=None,
                true_labels=None, class_names: Optional[tuple] = None) -> DataSplits:
  """A `DataSplits` of in-memory arrays (`config.dataset = 'arrays'`).

  train_images uint8 (N, H, W, C) with train_labels (N,) the given (possibly
  noisy) labels; meta_images / meta_labels: a clean meta set (M may be 0:
  none, for the methods that need no clean data); test_images /
  test_labels: what `evaluate` and `fit` report on; true_labels (N,): the
  true training labels where you know them (synthetic noise), for the
  clean / mislabelled diagnostics (never used for training).
  """
  x = _as_images(train_images, 'train_images')
  y = _as_labels(train_labels, len(x), num_classes, 'train_labels')
  empty = np.zeros((0,) + x.shape[1:], np.uint8)
  mx = empty if meta_images is None else _as_images(meta_images, 'meta_images')
  my = _as_labels(np.zeros(0, np.int32) if meta_labels is None else meta_labels, len(mx),
                  num_classes, 'meta_labels')
  tx = empty if test_images is None else _as_images(test_images, 'test_images')
  ty = _as_labels(np.zeros(0, np.int32) if test_labels is None else test_labels, len(tx),
                  num_classes, 'test_labels')
  for name, a in (('meta_images', mx), ('test_images', tx)):
    if a.shape[1:] != x.shape[1:]:
      raise ValueError(f'{name} have the shape {a.shape[1:]}, the training images {x.shape[1:]}')
  true = y if true_labels is None else _as_labels(true_labels, len(x), num_classes,
                                                  'true_labels')
  mean, std = channel_stats(x)
  info = {'dataset': 'arrays', 'source': 'arrays', 'seed': 0, 'num_train': int(len(x)),
          'num_meta': int(len(mx)), 'num_test': int(len(tx)), 'noise_type': 'given',
          'noise_rate': None,
          'realised_noise_rate': (None if true_labels is None
                                  else realised_noise_rate(y, true)),
          'imbalance_factor': 1.0,
          'class_counts': np.bincount(true, minlength=num_classes).tolist(),
          'noisy_class_counts': np.bincount(y, minlength=num_classes).tolist()}
  names = tuple(class_names) if class_names else tuple(f'class_{i}' for i in range(num_classes))
  return DataSplits(train_images=x, train_labels=y, train_clean_labels=true.astype(np.int32),
                    meta_images=mx, meta_labels=my, test_images=tx, test_labels=ty,
                    num_classes=num_classes, class_names=names, mean=mean, std=std, info=info)


def config_for(method: str, data: DataSplits, **fields) -> ml_collections.ConfigDict:
  """The schema's config for `method` on `data`, with `API_DEFAULTS` and `fields` set.

  fields: dotted field names of famus_jax.config ('famus.target_active') or plain ones
  ('num_epochs'); an unknown name raises ConfigError naming it. The result is validated.
  """
  c = schema.get_config()
  c.method, c.dataset, c.model = method, 'arrays', 'custom'
  c.num_meta = int(len(data.meta_labels))
  c.progress_bar = False
  names = traverse_util.flatten_dict(c.to_dict(), sep='.')
  for name, value in {**API_DEFAULTS, **fields}.items():
    if name not in names:
      raise ConfigError(f'config.{name} is not a field of famus_jax.config')
    parent, _, leaf = name.rpartition('.')
    (c[parent] if parent else c)[leaf] = value
  config_check.validate(c)
  return c


class Learner:
  """One method's compiled training step on your model and data, for your own loop.

  The same step, batches, checkpointable state and method hooks as the
  trainer (`famus_jax.train`): `Learner(...).step` is what `fit` runs. The
  state is a pytree of arrays (`TrainState`; a co-trained pair's
  `PairState`); `step` returns the new state and the step's `StepOutput`
  (`example_weights` (n,) with uniform = 1, `metrics`), compiled once per
  variant. Methods with work between epochs (FSR's dictionary, the pair's
  division) need `end_epoch` after every `steps_per_epoch` steps.
  """

  def __init__(self, model: nn.Module, data: DataSplits, method: str = 'mwnet', **fields):
    self.config = config_for(method, data, **fields)
    self.data = data
    self.run = create_run(self.config, data, data_mesh(), model=model)
    self._last_dispatch = None

  @property
  def steps_per_epoch(self) -> int:
    return self.run.steps_per_epoch

  @property
  def total_steps(self) -> int:
    return self.run.total_steps

  def init_state(self):
    """The initial state (config.seed)."""
    self._last_dispatch = None
    return self.run.init_state()

  def batch(self, step: int) -> dict:
    """The trainer's batch of step `step` (shuffled per epoch from config.seed; meta batch
    included for methods with a meta set). A batch of your own is a dict of the same keys:
    image uint8 (n, H, W, C), label (n,) int32, index (n,) int32 training ids and, for the
    meta methods, meta_image (m, H, W, C) and meta_label (m,)."""
    return self.run.batch(step)

  def step(self, state, batch):
    """(new state, StepOutput) of one training step; FloatingPointError if it was not finite."""
    result = self.run.run_step(state, batch, self._last_dispatch)
    self._last_dispatch = result.dispatch
    if not result.finite:
      raise FloatingPointError('the step gave a non-finite loss or gradient; the state is '
                               'the one before it')
    return result.state, result.output

  def end_epoch(self, state, epoch: int):
    """The state after the host-side work between epochs (epoch = finished epochs)."""
    return self.run.on_epoch_end(state, epoch).state

  def evaluate(self, state) -> dict:
    """Test accuracy and loss (and the training fit where true labels are known)."""
    if not len(self.data.test_labels):
      raise ValueError('no test set: pass test_images and test_labels to arrays_data')
    return self.run.evaluate(state)

  def predict(self, state, images) -> np.ndarray:
    """(n, C) eval-mode logits of uint8 images (a co-trained pair: its first member)."""
    member = getattr(state, 'a', state)
    run = getattr(self.run, 'member', self.run)
    logits_fn = jax.jit(make_eval_logits_fn(run.model, run.mean, run.std))
    return np.asarray(logits_fn(member.params, member.batch_stats, _as_images(images, 'images')))


def fit(model: nn.Module, data: DataSplits, workdir: str, method: str = 'mwnet',
        **fields) -> dict:
  """Train `model` on `data` with the trainer's loop and return its summary.

  Checkpoints, resume (rerun the same call: it continues from the workdir's
  latest checkpoint, and refuses other settings or data), evaluation after
  every `eval_every` steps, metrics.jsonl and summary.json in `workdir`, as a
  config-file run. fields: as `config_for`.
  """
  if not len(data.test_labels):
    raise ValueError('fit evaluates on a test set: pass test_images and test_labels to '
                     'arrays_data')
  return train_and_evaluate(config_for(method, data, **fields), workdir, data=data, model=model)
