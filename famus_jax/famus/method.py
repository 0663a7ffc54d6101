"""`method='famus'`: a meta re-weighting base (MW-Net, L2R or MLC) with FaMUS's estimator.

Dispatch to compiled variants (the real compute savings). The work of a step
depends on its lowest active layer (the floor, `layer_sets.py`): the
validation backward pass and the JVP tangent only run from the head down to
it. The floor is a per-step, data-dependent choice (the samplers see this
step's gradients), and a dynamic choice inside one compiled program
(`lax.switch` over per-layer branches) ran 10-37x slower on XLA:CPU. So the
step is compiled once per floor *bucket* (`config.famus.floor_buckets`:
'block' = stem / each residual block / head) and the trainer dispatches
(`Run.run_step` through the method's `FamusVariants`, a
`methods.base.StepVariants`: `choose / specialise / accepts`):

  * choose(last dispatch record) -> (bucket, diagnostics): the guess. Each
    step returns a typed `DispatchRecord` (`WeightOutput.dispatch`, the only
    per-step host transfer besides the finite flag); its `next_bucket` is,
    for 'learned', the bucket this step needed, and the
    guess is the lowest of those over the last `famus.guess_window` steps
    (host side: a covering guess costs some extra layers, a miss a whole
    re-run); for 'random' the exact bucket of the next step (its random layers
    are drawn from a key in the state and the step number); for fixed
    strategies their only bucket.
  * The step computes its own r (same rng on a re-run => same r) and reports
    `bucket_needed`. A variant covers the step when its floor is at or
    below the needed one (masking the layers in between is exact);
    `accepts` returns False otherwise and the loop re-runs the step with
    choose(record), which is then exact. `speculative = True` keeps the
    pre-step state alive for that (no buffer donation).
  * The sampler update uses only quantities of the active layers, so a
    covering variant below the needed floor gives the same result up to
    float rounding.

Diagnostics (`config.diagnostics_every` = N > 0): every N-th step (the step
whose count of finished steps after it is a multiple of N) runs a variant
that also computes the exact meta gradient on the same batch and stores the
cosine similarity / relative error of the estimate and running variances in
the estimator state; they are reported every step as one-element arrays (the
trainer logs the last value of small arrays), so no trainer hook is needed.
"""

import collections
import copy

from famus_jax import catalogue
from famus_jax.errors import ConfigError
from famus_jax.famus import layer_sets as ls_lib
from famus_jax.famus import objective
from famus_jax.famus.estimator import L2R_SAMPLER_INPUTS, STRATEGIES, FamusEstimator, FamusSettings
from famus_jax.famus.layerwise import JVP_MODES
from famus_jax.methods import meta_lr
from famus_jax.methods.base import StepVariants
from famus_jax.methods.bases import BASES, create_base
from famus_jax.methods.meta_reweighting import MetaReweighting, amortise


class FamusMethod(MetaReweighting):
  """MW-Net / L2R / MLC whose meta gradient is FaMUS's layer-wise sampled estimate."""

  def __init__(self, base, settings: FamusSettings, meta_cfg, diagnostics_every: int = 0):
    super().__init__('famus', base, FamusEstimator(settings,
                                                   diagnostics_enabled=diagnostics_every > 0),
                     meta_cfg)
    self.settings = settings
    self.diagnostics_every = diagnostics_every
    self.variants = amortise(FamusVariants(self.estimator, settings, diagnostics_every,
                                           self.update_every), self.update_every)

  def init_state(self, rng, params, num_train):
    check_against_model(self, params)
    return super().init_state(rng, params, num_train)

  def describe(self) -> dict:
    sets = self.estimator.cached_layer_sets
    if sets is None:
      return {}
    return {'famus_layers': list(sets.names), 'famus_candidates': list(sets.candidates),
            'famus_always_on': list(sets.always_on), 'famus_strategy': self.settings.strategy}


class FamusVariants(StepVariants):
  """FaMUS's compiled variants, keyed (floor bucket, diagnostics) (module docstring).

  estimator: the method's `FamusEstimator` (its layer sets, once a params
  tree was seen); the host-side guess history (the last `guess_window`
  needed buckets) is this object's, shared by every specialised method.
  update_every: `config.meta.update_every`; the steps between meta updates run
  no estimator (their own compiled step, `AmortisedVariants`), and their records
  (next_bucket -1) leave the guess history alone; diagnostics run on
  meta-update steps only.
  """
  speculative = True

  def __init__(self, estimator: FamusEstimator, settings: FamusSettings,
               diagnostics_every: int = 0, update_every: int = 1):
    self.estimator = estimator
    self.settings = settings
    self.diagnostics_every = diagnostics_every
    self.update_every = update_every
    self._recent = collections.deque(maxlen=max(settings.guess_window, 1))  # host side

  def _diagnostics_due(self, step: int) -> bool:
    every = self.diagnostics_every
    return every > 0 and (step + 1) % every == 0 and step % self.update_every == 0

  def initial_bucket(self) -> int:
    """Guess for a step without previous metrics (first step, or after resume)."""
    sets = self.estimator.cached_layer_sets
    if sets is None:
      return 0
    fixed = self.estimator.fixed_active_layers(sets)
    if fixed is not None:
      return sets.bucket_of_layers(fixed)
    if self.settings.strategy == 'learned':
      return sets.bucket_of_layers(sets.always_on or sets.candidates[-1:])
    return 0

  def choose(self, record, step=None):
    """The variant for the next step, or, given the record of a run this policy
    rejects (`accepts` False), the exact variant for re-running that same step.

    record: the previous run's `DispatchRecord` on the host, or None; step: unused (the
    record holds its own step).
    """
    del step
    if record is None:
      return (self.initial_bucket(), False)
    step = int(record.step)
    ran = (int(record.bucket_run), bool(record.diagnostics_run))
    if not self.accepts(ran, record):
      return (int(record.bucket_needed), self._diagnostics_due(step))
    guess = int(record.next_bucket)
    if guess < 0:  # a step without a meta update: the last guess stands
      guess = min(self._recent) if self._recent else self.initial_bucket()
    elif self.settings.strategy == 'learned':
      # The lowest floor of the last `guess_window` steps: a covering guess is
      # accepted, a re-run costs a whole step, so err towards covering.
      self._recent.append(guess)
      guess = min(self._recent)
    return (guess, self._diagnostics_due(step + 1))

  def specialise(self, method, key):
    bucket, diagnostics = key
    out = copy.copy(method)  # shares this policy (and its host-side history) with `method`
    out.estimator = method.estimator.specialise(bucket, diagnostics)
    return out

  def accepts(self, key, record) -> bool:
    bucket, diagnostics = key
    return (bucket <= int(record.bucket_needed)
            and diagnostics == self._diagnostics_due(int(record.step)))


def settings_from_config(config) -> FamusSettings:
  validate(config)
  return FamusSettings.from_config(config.famus)


def validate(config) -> None:
  """ConfigError naming the first invalid `config.famus` field."""
  f = config.famus
  choices = {'base': tuple(BASES), 'strategy': STRATEGIES, 'lg_form': objective.LG_FORMS,
             'floor_buckets': ls_lib.FLOOR_GRANULARITIES, 'jvp': JVP_MODES,
             'l2r_sampler_input': L2R_SAMPLER_INPUTS}
  for field, allowed in choices.items():
    if f[field] not in allowed:
      raise ConfigError(f'config.famus.{field}={f[field]!r} is not one of {sorted(allowed)}')
  positive = ('sampler_lr', 'temperature', 'sampler_hidden', 'meta_lr_scale')
  for field in positive:
    if not f[field] > 0:
      raise ConfigError(f'config.famus.{field}={f[field]!r} must be > 0')
  for field in ('target_active', 'lambda_r', 'lambda_g', 'lc_weight'):
    if not f[field] >= 0:
      raise ConfigError(f'config.famus.{field}={f[field]!r} must be >= 0')
  for field in ('sampler_momentum', 'variance_decay'):
    if not 0 <= f[field] < 1:
      raise ConfigError(f'config.famus.{field}={f[field]!r} is outside [0, 1)')
  if f.sampler_depth < 2:
    raise ConfigError(f'config.famus.sampler_depth={f.sampler_depth!r} must be >= 2 '
                      '(2 = the paper, 3 = the reference code)')
  if f.guess_window < 1:
    raise ConfigError(f'config.famus.guess_window={f.guess_window!r} must be >= 1')
  if f.exact_steps < 0:
    raise ConfigError(f'config.famus.exact_steps={f.exact_steps!r} must be >= 0')
  if f.exact_meta_lr_scale is not None and not f.exact_meta_lr_scale > 0:
    raise ConfigError(f'config.famus.exact_meta_lr_scale={f.exact_meta_lr_scale!r} must be > 0 '
                      '(or None: famus.meta_lr_scale)')
  if f.num_random < 1:
    raise ConfigError(f'config.famus.num_random={f.num_random!r} must be >= 1')
  if f.strategy == 'block' and f.block == 0:
    raise ConfigError('config.famus.block=0: blocks count from 1 (or from -1 at the top)')


def check_against_model(method: FamusMethod, params) -> None:
  """Resolve the layer sets for a model now, so that name errors surface at init."""
  est = method.estimator
  sets = est.layer_sets(params)
  if method.settings.strategy in ('learned', 'random') and not sets.candidates:
    raise ConfigError(f'config.famus.candidates={method.settings.candidates!r} leaves no '
                      f'candidate layer to sample (always on: {list(sets.always_on)})')
  est.fixed_active_layers(sets)


def create_famus(config) -> FamusMethod:
  """The FaMUS method for `config` (config.famus.base = 'mwnet', 'l2r' or 'mlc')."""
  config = catalogue.with_update_period(config)
  settings = settings_from_config(config)
  f = config.famus
  # The meta updates inside the first exact_steps training steps (0, k, 2k, ... under
  # meta.update_every = k) estimate with every layer: their own scale where one is set.
  exact_updates = -(-f.exact_steps // config.meta.update_every)
  scale = meta_lr.switch_after(
      exact_updates, f.meta_lr_scale if f.exact_meta_lr_scale is None else f.exact_meta_lr_scale,
      f.meta_lr_scale)
  base = create_base(f.base, config, scale)
  return FamusMethod(base, settings, config.meta, config.diagnostics_every)

