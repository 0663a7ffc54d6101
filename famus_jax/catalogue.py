"""The training methods, declared once: what every other part reads about a method.

One `MethodEntry` per value of `config.method`: its factory (an import path,
resolved by `famus_jax.method_registry` only when a run builds the method), its
config group, the config fields whose values set its runs apart and the one
short name each such value shows ('famus(l2r)', 'mwnet[reuse]',
'fsr[one_pass]', 'famus[pseudo_clean]'), its benchmark variants, its PyTorch
peer, the metrics and events it writes to metrics.jsonl, whether it trains one
network or the co-trained pair, whether it reads the clean meta set, and which
per-example quantity ranks a run's suspected label errors
(`famus_jax.tools.label_issues`), and the period of its meta-model updates when
`config.meta.update_every` is unset (`update_every`).

The metric and event names of metrics.jsonl are declared here too, so the
producers and the tools (report, benchmark) spell them once. This module
imports nothing from the package: every layer may read it.

Adding a method: one entry in `CATALOGUE` (plus the method's own module).
"""

import copy
import dataclasses
from typing import Any, Mapping, Optional

from flax import traverse_util

# ---- events of metrics.jsonl (the 'event' field of each record) ---------------------------
TRAIN = 'train'          # window means of the step metrics, every config.log_every steps
EVAL = 'eval'            # test accuracy / loss (and the training fit) at each evaluation
WEIGHTS = 'weights'      # one batch's example weights and hidden noisy flags
DIVISION = 'division'    # the co-trained pair's pseudo-clean sets after an epoch
RESUME = 'resume'        # a run continued from a checkpoint
DATA = 'data'            # the data set's facts (realised noise rate, sizes), at the start
METHOD = 'method'        # the method's facts (FaMUS's layers), at the start
EVENTS = (TRAIN, EVAL, WEIGHTS, DIVISION, RESUME, DATA, METHOD)
# What every run writes; a `MethodEntry.events` lists what its method adds (and a run on the
# pair's pseudo-clean meta sets adds DIVISION).
COMMON_EVENTS = (TRAIN, EVAL, WEIGHTS, RESUME, DATA, METHOD)

# ---- metrics: keys of the records ------------------------------------------------------
TEST_ACCURACY = 'test_accuracy'
TRAIN_TIME_S = 'train_time_s'
# The eval-mode fit of the training set (EVAL records of runs with synthetic noise):
# accuracy against the given labels on all / correctly / wrongly labelled examples, and the
# share of the wrongly labelled ones predicted as their true class.
TRAIN_FIT = 'train_fit'
TRAIN_FIT_CLEAN = 'train_fit_clean'
TRAIN_FIT_NOISY = 'train_fit_noisy'   # the memorised share of the mislabelled examples
TRAIN_TRUE_NOISY = 'train_true_noisy'
TRAIN_FIT_METRICS = (TRAIN_FIT, TRAIN_FIT_CLEAN, TRAIN_FIT_NOISY, TRAIN_TRUE_NOISY)
FAMUS_ACTIVE = 'famus_active'                 # step metric: the layers in this step's estimate
FAMUS_ACTIVE_COUNTS = 'famus_active_counts'   # TRAIN: cumulative steps each candidate was on
FSR_DICT_PURITY = 'fsr_dict_purity'           # TRAIN: share of correct labels in the dictionary
MLC_TRANSITION_DIAGONAL = 'mlc_transition_diagonal'  # TRAIN: diagonal of MLC's transition
# Step metric of runs with config.meta.update_every > 1: 1 on the steps that updated the meta
# model, 0 on the others (whose meta metrics are NaN: not measured at that step).
META_UPDATE = 'meta_update'


@dataclasses.dataclass(frozen=True)
class Variant:
  """A config field whose value sets a method's runs apart, and the name that value shows.

  field: dotted config field. names: value -> its short name; None: every value but
  `default` shows as itself. stem: the name joins the method's in parentheses
  ('famus(l2r)') instead of a bracketed tag ('mwnet[reuse]'). when: (field, value) that
  must hold for this variant to count (the semi-supervised step only on pseudo-clean sets).
  unless: (field, value) under which the variant does not count (FaMUS on the L2R base has
  one actual step and no meta model to amortise).
  prefix: written before a value shown as itself ('every5' for meta.update_every=5).
  """
  field: str
  names: Optional[Mapping[Any, str]] = None
  default: Any = None
  stem: bool = False
  when: Optional[tuple] = None
  unless: Optional[tuple] = None
  prefix: str = ''

  def name_of(self, value) -> Optional[str]:
    """The short name of `value`, None when it is the reference value."""
    if self.names is not None:
      return self.names.get(value) if _hashable(value) else None
    return None if value == self.default else f'{self.prefix}{value}'


def _hashable(value) -> bool:
  try:
    hash(value)
  except TypeError:
    return False
  return True


@dataclasses.dataclass(frozen=True)
class BenchmarkVariant:
  """One row of the step-time benchmark (`famus_jax.tools.benchmark --methods=NAME`).

  overrides: dotted config field -> value. settle_steps: untimed steps first (FaMUS's
  samplers). static_layers_from: the benchmark variant whose learned samplers' most frequent
  layer set this one holds fixed. peer: whether the method's PyTorch peer times this row.
  """
  name: str
  overrides: Mapping[str, Any]
  settle_steps: int = 0
  static_layers_from: Optional[str] = None
  peer: bool = True


# ---- which per-example quantity ranks a run's label issues (famus_jax/tools/label_issues.py) --
MEAN_WEIGHT = 'mean_weight'              # the per-example record's running mean weight
META_MARGIN = 'meta_margin'              # a margin score the method keeps (higher: cleaner)
CLEAN_PROBABILITY = 'clean_probability'  # the co-trained pair's clean probability
LABEL_ISSUE_SOURCES = (MEAN_WEIGHT, META_MARGIN, CLEAN_PROBABILITY)


@dataclasses.dataclass(frozen=True)
class LabelIssueScore:
  """The per-example judgement that ranks a method's suspected label errors.

  source: MEAN_WEIGHT (the record's weight_sum / seen, famus_jax/train/record.py),
  META_MARGIN (a per-example margin the method keeps in its `method_state` under `key`, with
  the number of times each example was scored under `visits`) or CLEAN_PROBABILITY (the
  co-trained pair's last division; a run on the pair's pseudo-clean meta sets is judged by it
  whatever its method declares).
  """
  source: str = MEAN_WEIGHT
  key: Optional[str] = None
  visits: Optional[str] = None

  def __post_init__(self):
    if self.source not in LABEL_ISSUE_SOURCES:
      raise ValueError(f'LabelIssueScore.source={self.source!r} is not one of '
                       f'{list(LABEL_ISSUE_SOURCES)}')
    if (self.source == META_MARGIN) != (self.key is not None and self.visits is not None):
      raise ValueError(f'LabelIssueScore: source={self.source!r} takes the method_state keys '
                       f'key and visits exactly when it is {META_MARGIN!r}')


@dataclasses.dataclass(frozen=True)
class MethodEntry:
  """Everything declared about one method (`config.method == name`).

  factory: 'module:function', the function taking the config and returning the `Method`.
  group: the config group holding its settings (None: none of its own). variants: the
  fields that name its variants (`Variant`), in the order the label lists them.
  ablation_fields: prefixes of the config fields whose differing values among one setting's
  runs tag them apart in the report ('fsr[relabel_momentum=0.1]'). peer: the method of
  `famus_jax.tools.torch_peer` that computes it the reference code's way (None: no peer).
  metrics / events: what it writes to metrics.jsonl beyond every method's (COMMON_EVENTS).
  networks: 1, or 2 for a co-trained pair. clean_meta: whether it reads the clean meta
  set. pseudo_clean: whether `config.meta_set='pseudo_clean'` can feed its meta batch
  instead. colour: its colour in the report's figures (None: one of the spare colours).
  label_issue_score: the per-example judgement that ranks its runs' suspected label errors
  (`LabelIssueScore`; the default: the running mean weight).
  meta_model: whether it learns a meta model between steps (MW-Net's weight net, MLC's
  transition matrix), whose updates `config.meta.update_every` spaces out; a method without
  one trains at every step whatever the field says. update_every: that period when
  `config.meta.update_every` is None (`update_every(config)`). accelerates: the config field
  naming the method it speeds up (FaMUS: 'famus.base'), whose meta model and period it takes.
  inert_fields: field -> (field, value) under which it has no effect on a run (FaMUS's
  warm-up rate without a warm-up); the report does not tag runs apart by it there.
  """
  name: str
  factory: str
  group: Optional[str] = None
  variants: tuple = ()
  ablation_fields: tuple = ()
  benchmarks: tuple = ()
  peer: Optional[str] = None
  metrics: tuple = ()
  events: tuple = ()
  networks: int = 1
  clean_meta: bool = False
  pseudo_clean: bool = False
  colour: Optional[str] = None
  label_issue_score: LabelIssueScore = LabelIssueScore()
  meta_model: bool = False
  update_every: int = 1
  accelerates: Optional[str] = None
  inert_fields: Mapping[str, tuple] = dataclasses.field(default_factory=dict)

  def inert(self, field: str, fields: Mapping) -> bool:
    """Whether `field` has no effect on a run of these (flat, dotted) config `fields`."""
    condition = self.inert_fields.get(field)
    return condition is not None and fields.get(condition[0]) == condition[1]

  @property
  def factory_path(self) -> tuple:
    """(module, attribute) of the factory."""
    module, _, attribute = self.factory.partition(':')
    return module, attribute


# The meta-update period of MW-Net's runs (and FaMUS's on it) by default: on the memorisation
# grid MW-Net every fifth step at the scaled rate ends level with every step, and FaMUS (with
# its exact warm-up) above exact MW-Net; MLC every fifth step ends 2.7 points below MLC at
# every step, so MLC keeps 1 (docs/results.md).
AMORTISED_PERIOD = 5
# The variants every meta method shares: the one-backward actual step, and the co-trained
# pair's pseudo-clean meta sets (with the pair's semi-supervised step).
REUSE = Variant('meta.actual_step', {'reuse': 'reuse'})
EVERY = Variant('meta.update_every', default=1, prefix='every')
# Amortised runs whose meta learning rate is k times the base's (no effect at update_every = 1).
AMORTISED_LR = Variant('meta.amortised_lr', {'scaled': 'scaled_lr'},
                       unless=('meta.update_every', 1))
PSEUDO_CLEAN = Variant('meta_set', {'pseudo_clean': 'pseudo_clean'})
ON_L2R = ('famus.base', 'l2r')  # FaMUS's L2R base: one actual step, no meta model
SEMI = Variant('cotrain.semi_supervised', {True: 'semi'}, when=('meta_set', 'pseudo_clean'))
META_FIELDS = ('meta.', 'meta_batch_size', 'meta_gradient')
REGISTRY = 'famus_jax.method_registry'
# The benchmark's rows name their actual step and meta-update period: the plain names time the
# papers' update (recompute, every step), the *_reuse rows the one-backward form, the *_every5
# rows amortised meta updates (MW-Net's and FaMUS's default period); FaMUS's rows time its sampled
# estimate (no exact warm-up).
EVERY_STEP = {'meta.update_every': 1}
RECOMPUTE = {'meta.actual_step': 'recompute', **EVERY_STEP}
REUSE_EVERY_STEP = {'meta.actual_step': 'reuse', **EVERY_STEP}
FAMUS = {'method': 'famus', 'famus.strategy': 'learned', 'famus.exact_steps': 0, **RECOMPUTE}
FSR = {'method': 'fsr', 'fsr.warmup_epochs': 0}  # timed steps re-weight (same program)
B = BenchmarkVariant

CATALOGUE = {
    'erm': MethodEntry(
        'erm', f'{REGISTRY}:create_erm', peer='erm', colour='#444444',
        benchmarks=(B('erm', {'method': 'erm'}),)),
    'mwnet': MethodEntry(
        'mwnet', f'{REGISTRY}:create_exact', group='mwnet',
        variants=(REUSE, EVERY, AMORTISED_LR, PSEUDO_CLEAN, SEMI),
        ablation_fields=('mwnet.',) + META_FIELDS, peer='mwnet', clean_meta=True,
        pseudo_clean=True, colour='tab:blue', meta_model=True, update_every=AMORTISED_PERIOD,
        benchmarks=(B('mwnet', {'method': 'mwnet', **RECOMPUTE}),
                    B('mwnet_reference', {'method': 'mwnet', **RECOMPUTE,
                                          'meta_gradient': 'reverse_over_reverse'}),
                    B('mwnet_reuse', {'method': 'mwnet', **REUSE_EVERY_STEP}),
                    B('mwnet_every5', {'method': 'mwnet', **RECOMPUTE, 'meta.update_every': 5},
                      peer=False),
                    B('mwnet_reuse_every5', {'method': 'mwnet', 'meta.actual_step': 'reuse',
                                             'meta.update_every': 5}, peer=False))),
    'l2r': MethodEntry(
        'l2r', f'{REGISTRY}:create_exact', group='l2r', variants=(PSEUDO_CLEAN, SEMI),
        ablation_fields=('l2r.',) + META_FIELDS, peer='l2r', clean_meta=True,
        pseudo_clean=True, colour='tab:orange',
        benchmarks=(B('l2r', {'method': 'l2r'}),
                    B('l2r_reference', {'method': 'l2r',
                                        'meta_gradient': 'reverse_over_reverse'}))),
    'random_weight': MethodEntry(
        'random_weight', 'famus_jax.methods.random_weight:create_random_weight',
        colour='tab:olive',
        benchmarks=(B('random_weight', {'method': 'random_weight'}),)),
    'mlc': MethodEntry(
        'mlc', f'{REGISTRY}:create_exact', group='mlc', variants=(REUSE, EVERY, AMORTISED_LR),
        ablation_fields=('mlc.',) + META_FIELDS, metrics=(MLC_TRANSITION_DIAGONAL,),
        clean_meta=True, colour='tab:purple', meta_model=True,
        benchmarks=(B('mlc', {'method': 'mlc', **RECOMPUTE}),
                    B('mlc_reuse', {'method': 'mlc', **REUSE_EVERY_STEP}))),
    'famus': MethodEntry(
        'famus', 'famus_jax.famus.method:create_famus', group='famus',
        variants=(Variant('famus.base', {'l2r': 'l2r', 'mlc': 'mlc'}, stem=True),
                  Variant('famus.strategy', default='learned'),
                  dataclasses.replace(REUSE, unless=ON_L2R),
                  dataclasses.replace(EVERY, unless=ON_L2R), AMORTISED_LR, PSEUDO_CLEAN, SEMI),
        ablation_fields=('famus.', 'mwnet.', 'l2r.', 'mlc.') + META_FIELDS[:2],
        metrics=(FAMUS_ACTIVE, FAMUS_ACTIVE_COUNTS), peer='famus',
        clean_meta=True, pseudo_clean=True, colour='tab:green', accelerates='famus.base',
        meta_model=True, update_every=AMORTISED_PERIOD,  # on its default base, MW-Net
        inert_fields={'famus.exact_meta_lr_scale': ('famus.exact_steps', 0),
                      'famus.meta_lr_scale': ON_L2R},  # L2R's base has no meta model
        benchmarks=(
            B('famus', FAMUS, settle_steps=40),
            B('famus_paper', {**FAMUS, 'famus.candidates': 'all'}, settle_steps=40),
            B('famus_static', {**FAMUS, 'famus.strategy': 'static'},
              static_layers_from='famus'),
            B('famus_no_lc', {**FAMUS, 'famus.lc_weight': 0.0}, settle_steps=40),
            B('famus_top', {**FAMUS, 'famus.strategy': 'static', 'famus.static_layers': 'top'}),
            B('famus_all', {**FAMUS, 'famus.strategy': 'all'}),
            B('famus_random', {**FAMUS, 'famus.strategy': 'random'}),
            B('famus_block', {**FAMUS, 'famus.strategy': 'block'}),
            B('famus_l2r', {**FAMUS, 'famus.base': 'l2r'}, settle_steps=40),
            B('famus_reuse', {**FAMUS, **REUSE_EVERY_STEP}, settle_steps=40),
            # Amortised meta updates (config.meta.update_every): the peer has none.
            B('famus_every5', {**FAMUS, 'meta.update_every': 5}, settle_steps=40, peer=False),
            B('famus_reuse_every5', {**FAMUS, 'meta.actual_step': 'reuse',
                                     'meta.update_every': 5}, settle_steps=40, peer=False),
            B('famus_static_reuse', {**FAMUS, **REUSE_EVERY_STEP, 'famus.strategy': 'static'},
              static_layers_from='famus_reuse'),
            B('famus_block_reuse', {**FAMUS, **REUSE_EVERY_STEP, 'famus.strategy': 'block'}),
            B('famus_block_reuse_every5', {**FAMUS, 'famus.strategy': 'block',
                                           'meta.actual_step': 'reuse', 'meta.update_every': 5},
              peer=False),
            # The peer has no MLC base.
            B('famus_mlc', {**FAMUS, 'famus.base': 'mlc'}, settle_steps=40, peer=False),
            B('famus_mlc_reuse', {**FAMUS, **REUSE_EVERY_STEP, 'famus.base': 'mlc'},
              settle_steps=40, peer=False))),
    'fsr': MethodEntry(
        'fsr', 'famus_jax.fsr.method:create_fsr', group='fsr',
        variants=(Variant('fsr.mixup_form', {'one_pass': 'one_pass'}),),
        ablation_fields=('fsr.',), metrics=(FSR_DICT_PURITY,), peer='fsr',
        colour='tab:red', label_issue_score=LabelIssueScore(META_MARGIN, 'score', 'visits'),
        benchmarks=(B('fsr', FSR),
                    B('fsr_nomixup', {**FSR, 'fsr.mixup_alpha': 0.0}),
                    B('fsr_onepass', {**FSR, 'fsr.mixup_form': 'one_pass'}))),
    'dividemix': MethodEntry(
        'dividemix', f'{REGISTRY}:create_dividemix', group='cotrain',
        ablation_fields=('cotrain.',), events=(DIVISION,), networks=2,
        colour='tab:brown', label_issue_score=LabelIssueScore(CLEAN_PROBABILITY)),
}


def entry(method: str) -> Optional[MethodEntry]:
  """The entry of `config.method == method`, None for a name the catalogue does not hold."""
  return CATALOGUE.get(method)


def names() -> tuple:
  """The method names, in the catalogue's order (the order of the report's tables)."""
  return tuple(CATALOGUE)


def pseudo_clean_methods() -> tuple:
  """The methods whose meta batch `config.meta_set='pseudo_clean'` can feed."""
  return tuple(n for n, e in CATALOGUE.items() if e.pseudo_clean)


def peer_methods() -> tuple:
  """The methods of the PyTorch peer, in the catalogue's order."""
  return tuple(e.peer for e in CATALOGUE.values() if e.peer is not None)


def benchmark_variants() -> dict:
  """Benchmark name -> (its method's entry, `BenchmarkVariant`), over the whole catalogue."""
  return {v.name: (e, v) for e in CATALOGUE.values() for v in e.benchmarks}


def named_fields() -> tuple:
  """Every config field some method's `Variant` names (the report's ablation tags skip them)."""
  return tuple(sorted({v.field for e in CATALOGUE.values() for v in e.variants}))


def _flat(config: Mapping) -> dict:
  """A nested dict or ConfigDict as one dict of dotted names."""
  nested = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  return traverse_util.flatten_dict(nested, sep='.')


def update_every(config: Mapping) -> int:
  """The meta-update period a run trains with: `config.meta.update_every`, or where it is None
  its method's declared one (`MethodEntry.update_every`; FaMUS: its base's); 1 for a method
  without a meta model (`MethodEntry.meta_model`: L2R, FaMUS on it, ERM, FSR, ...), whose
  step updates nothing between steps, whatever the field says."""
  fields = _flat(config)
  spec = entry(fields.get('method'))
  if spec is not None and spec.accelerates is not None:  # without the field: its own entry's
    spec = entry(fields.get(spec.accelerates)) or spec
  if spec is None or not spec.meta_model:
    return 1
  value = fields.get('meta.update_every')
  return spec.update_every if value is None else value


def with_update_period(config):
  """`config` (a ConfigDict) whose `meta.update_every` is the period the run trains with
  (`update_every`: the field where it is set and the method has a meta model, the method's own
  where it is None, 1 without a meta model), on a copy where that differs. Factories build
  methods from it, and the trainer records it (config.json, the run fingerprint), so a run's
  records name the period it ran with."""
  period = update_every(config)
  if config.meta.update_every == period:
    return config
  resolved = copy.deepcopy(config)
  resolved.meta.update_every = period
  return resolved


def clean_images(config: Mapping) -> int:
  """How many clean-labelled images a run's method reads: `config.num_meta` where the method
  reads the clean meta set (`MethodEntry.clean_meta`) and `config.meta_set` is 'clean', else 0
  (ERM, FSR, DivideMix, the pseudo-clean meta sets)."""
  fields = _flat(config)
  spec = entry(fields.get('method'))
  if spec is None or not spec.clean_meta or fields.get('meta_set', 'clean') != 'clean':
    return 0
  return int(fields.get('num_meta') or 0)


def label(config: Mapping) -> str:
  """The one short name of a run's method and variant, from its config (a nested dict).

  config.method, then the stem variant in parentheses and the tags in brackets:
  'famus(l2r)', 'famus(mlc)[reuse]', 'mwnet[pseudo_clean,semi]', 'fsr[one_pass]'. Fields
  missing from `config` count as their reference value.
  """
  method = config.get('method', '?')
  spec = entry(method)
  fields = _flat(config)
  if 'meta.update_every' in fields:  # None: the method's own period, named as that number
    fields['meta.update_every'] = update_every(fields)
  stem, tags = method, []
  for variant in (spec.variants if spec else ()):
    if variant.when is not None and fields.get(variant.when[0]) != variant.when[1]:
      continue
    if variant.unless is not None and fields.get(variant.unless[0]) == variant.unless[1]:
      continue
    name = variant.name_of(fields.get(variant.field, variant.default))
    if name is None:
      continue
    if variant.stem:
      stem = f'{method}({name})'
    else:
      tags.append(name)
  return stem + (f'[{",".join(tags)}]' if tags else '')
