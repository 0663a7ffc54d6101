"""Two co-trained networks through the one training loop (FaMUS supplement Alg. 2, first part).

`config.meta_set='pseudo_clean'`: no clean data. Members A and B train side
by side on the same schedule; `CoTrainedRun` is a `TrainingRun` as `Run` is
(train/run.py), so `famus_jax.train.trainer` drives it with the same loop,
checkpoints, fingerprint and logs.

- State: one `PairState` pytree (famus_jax/cotrain/pair.py) holding both
  TrainStates and the last division (clean probabilities and pseudo-clean
  masks, fixed shape (N,)), saved whole in every checkpoint.
- Members: A is initialised from config.seed, B from config.seed + 1 (params,
  method state and step keys, `Run.init_state(seed)`); the training batch
  order of member m is `batches.train_batch_indices(seed_m, step, ...)`, so
  the two see different orders; B's is the order of a run with seed + 1.
- Steps: epochs e < cotrain.warmup_epochs are the warm-up: both members take
  a plain cross-entropy step (one compiled ERM step, `make_train_step` with
  `ERM`, on the same TrainState structure: ERM passes the method state
  through untouched), and no meta batch is built. From then on each member
  takes the method's step (`Run.run_step`, the same compiled step functions
  for both, FaMUS's variant dispatch per member: `last_dispatch` is the pair
  (dispatch of A, dispatch of B)) with a meta batch drawn from the OTHER
  member's pseudo-clean set S: the sorted ids of S consumed as
  `batches.meta_batch_indices(seed_m, step, |S|, meta_batch_size)`, images
  and given (noisy) training labels. FaMUS's host-side guess history is one
  for both members (the lowest floor of both members' recent steps: a
  covering guess more often; `accepts` checks each member's own record).
- Epoch ends (`on_epoch_end`): each member's method hook, then, from epoch
  warmup_epochs on, the division: eval-mode losses of every training example
  for each member (batches of eval_batch_size), c = `clean_probability`,
  S = c > cotrain.clean_threshold (top-k fallback, `pseudo_clean_mask`);
  a 'division' event with each set's size, precision / recall against the
  hidden noise flags (diagnostics only) and the mixture means.
- Logged step metrics: member A's, plus B's `B_METRICS` prefixed 'b_'. The
  clean / mislabelled weight statistics and 'weights' events are member A's.
- Test prediction: the mean of both members' logits (test_accuracy,
  test_loss); each member's own accuracy is logged as a_ / b_test_accuracy.
- A non-finite step stops the run as for `Run`: when A's step is not finite
  B is not stepped (the saved state is the consistent pre-step pair); when
  only B's is, A has already advanced (its old buffers were donated), so the
  run stops with A one step ahead in that last save.

Semi-supervised part (`cotrain.pair.semi_supervised(config)`: method
'dividemix', or cotrain.semi_supervised=True with a meta method): after the
warm-up, member m's training batch is drawn from its labelled part X_m (the
OTHER member's c_i > cotrain.labelled_threshold, `pair.labelled_mask`;
`batches.subset_batch_indices(seed_m, step, |X_m|, batch_size, 'labelled')`
of its sorted ids) with those c_i as clean_prob, plus an unlabelled batch
from the rest U_m (stream 'unlabelled', cotrain.unlabelled_batch_size), and
the other member's current params (B steps after A, so B's partner is A
after this step's update); meta batches also carry the c_i of their
examples. The step builds the mixed rows from them through its batch
preparation hook, `semi_supervised.SemiSupervised` (famus_jax/cotrain/
semi_supervised.py; the members' `Run` takes it as its `preparation`); the
logged weights are those of the mixed rows, by the id of each row's
dominant example. Every epoch has steps_per_epoch = N // batch_size steps,
as the other methods (DivideMix's loop runs |X| / batch_size steps per
epoch), so schedules and checkpoints stay step-based.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from famus_jax.cotrain import semi_supervised as semi_lib
from famus_jax.cotrain.pair import (PairState, divide_member, initial_division, labelled_mask,
                                    meta_ids, semi_supervised)
from famus_jax.data import DataSplits, batches
from famus_jax.methods.erm import ERM
from famus_jax.train.run import EpochEnd, LogEvent, Run, StepResult
from famus_jax.train.step import (StepOutput, cross_entropy, fit_sums, make_eval_logits_fn,
                                  make_example_losses_fn, make_train_step)

# Step metrics of member B logged next to A's, with the prefix 'b_' (when the step has them).
B_METRICS = ('train_loss', 'train_accuracy', 'weighted_loss', 'meta_loss')


class PairBatch(NamedTuple):
  """Host-side batch of one pair step: what `run_step` completes with the meta part.

  step: the number of finished steps; index_a, index_b: int64 (batch_size,)
  each member's training ids; warmup: whether this step is a warm-up step
  (plain cross-entropy, no meta batch).
  """
  step: int
  index_a: np.ndarray
  index_b: np.ndarray
  warmup: bool


def make_pair_eval_step(model, mean, std):
  """pair_eval(params_a, stats_a, params_b, stats_b, images uint8, labels, mask) -> sums.

  The ensemble prediction is the mean of the two members' eval-mode logits,
  z = (z_A + z_B) / 2 (FaMUS supplement Alg. 2). Returns {'correct',
  'loss_sum' (cross-entropy of z), 'count', 'a_correct', 'b_correct'}, each ()
  summed over the real examples (`mask` (n,)).
  """
  eval_logits = make_eval_logits_fn(model, mean, std)

  def pair_eval(params_a, stats_a, params_b, stats_b, images, labels, mask):
    logits_a = eval_logits(params_a, stats_a, images)
    logits_b = eval_logits(params_b, stats_b, images)
    logits = (logits_a + logits_b) / 2

    def correct(z):
      return jnp.sum((jnp.argmax(z, -1) == labels) & mask)

    losses = cross_entropy(logits, labels)
    return {'correct': correct(logits), 'loss_sum': jnp.sum(jnp.where(mask, losses, 0.0)),
            'count': jnp.sum(mask), 'a_correct': correct(logits_a),
            'b_correct': correct(logits_b)}

  return pair_eval


def make_pair_fit_step(model, mean, std):
  """pair_fit(params_a, stats_a, params_b, stats_b, images, labels (n, 2), mask) -> sums.

  `step.fit_sums` of the ensemble's logits (z_A + z_B) / 2 on training images.
  """
  eval_logits = make_eval_logits_fn(model, mean, std)

  def pair_fit(params_a, stats_a, params_b, stats_b, images, labels, mask):
    logits = (eval_logits(params_a, stats_a, images) + eval_logits(params_b, stats_b, images)) / 2
    return fit_sums(logits, labels, mask)

  return pair_fit


class CoTrainedRun:
  """Two co-trained networks, a `TrainingRun` (module docstring)."""

  def __init__(self, config, data: DataSplits, mesh, model=None):
    """model: a Flax module to train instead of `config.model`'s (`Run`)."""
    self.semi = None
    if semi_supervised(config):
      self.semi = semi_lib.from_config(
          config.cotrain, batches.steps_per_epoch(data.num_train, config.batch_size))
    self.member = Run(config, data, mesh, preparation=self.semi, model=model)
    m = self.member
    self.config, self.data, self.mesh = config, data, mesh
    self.method, self.model, self.tx, self.lr_fn = m.method, m.model, m.tx, m.lr_fn
    self.replicated, self.sharded = m.replicated, m.sharded
    self.num_train, self.is_noisy = m.num_train, m.is_noisy
    self.steps_per_epoch, self.total_steps = m.steps_per_epoch, m.total_steps
    self.member_seeds = (config.seed, config.seed + 1)
    self.min_pseudo_clean = config.cotrain.min_pseudo_clean or config.meta_batch_size
    self.warmup_epochs = config.cotrain.warmup_epochs
    self._warmup_step = jax.jit(make_train_step(
        m.model, ERM(), m.tx, m.lr_fn, config.augment, m.mean, m.std, data.num_classes,
        config.meta_bn_train_mode), donate_argnums=(0,))
    self._warmup_compiled = False
    self._example_losses = jax.jit(make_example_losses_fn(m.model, m.mean, m.std))
    self._pair_eval = jax.jit(make_pair_eval_step(m.model, m.mean, m.std))
    self._pair_fit = jax.jit(make_pair_fit_step(m.model, m.mean, m.std))
    self.unlabelled_batch_size = config.cotrain.unlabelled_batch_size or config.batch_size
    self._ids_of = None  # (mask_a, mask_b) device arrays the cached ids were read from
    self._ids = None
    self._split_of = None  # (clean_prob_a, clean_prob_b) device arrays the splits came from
    self._splits = None

  # ---- state -------------------------------------------------------------------------------
  def init_state(self) -> PairState:
    a = self.member.init_state(self.member_seeds[0])
    b = self.member.init_state(self.member_seeds[1])
    prob, mask = initial_division(self.num_train)
    state = PairState(a=a, b=b, clean_prob_a=prob, clean_prob_b=prob.copy(),
                      pseudo_clean_a=mask, pseudo_clean_b=mask.copy(),
                      division_epoch=np.asarray(-1, np.int32))
    return jax.device_put(state, self.replicated)

  # ---- batches -----------------------------------------------------------------------------
  def batch(self, step: int) -> PairBatch:
    cfg = self.config
    index_a, index_b = (batches.train_batch_indices(seed, step, self.num_train, cfg.batch_size)
                        for seed in self.member_seeds)
    return PairBatch(int(step), index_a, index_b,
                     step // self.steps_per_epoch < self.warmup_epochs)

  def pseudo_clean_ids(self, state: PairState):
    """(sorted ids of S_a, sorted ids of S_b), int64, read from the state's masks.

    Cached host-side until the state holds other mask arrays (a division or a
    restore), so a step copies nothing to the host for them.
    """
    if (self._ids_of is None or self._ids_of[0] is not state.pseudo_clean_a
        or self._ids_of[1] is not state.pseudo_clean_b):
      mask_a, mask_b = jax.device_get((state.pseudo_clean_a, state.pseudo_clean_b))
      self._ids_of = (state.pseudo_clean_a, state.pseudo_clean_b)
      self._ids = (meta_ids(mask_a), meta_ids(mask_b))
    return self._ids

  def meta_indices(self, state: PairState, step: int):
    """(meta ids of A, meta ids of B), int64 (meta_batch_size,) training ids each.

    A's come from B's pseudo-clean set and B's from A's: member m takes
    positions `meta_batch_indices(seed_m, step, |S|, meta_batch_size)` of the
    other member's sorted ids S.
    """
    ids_a, ids_b = self.pseudo_clean_ids(state)
    out = []
    for seed, ids in zip(self.member_seeds, (ids_b, ids_a)):
      pos = batches.meta_batch_indices(seed, step, len(ids), self.config.meta_batch_size)
      out.append(ids[pos])
    return tuple(out)

  def semi_splits(self, state: PairState):
    """Per member (A, B): (labelled ids, unlabelled ids, the partner's c (N,) float32).

    Member A's split is B's division and B's is A's (`pair.labelled_mask`),
    read from the state's clean probabilities and cached like
    `pseudo_clean_ids`.
    """
    if (self._split_of is None or self._split_of[0] is not state.clean_prob_a
        or self._split_of[1] is not state.clean_prob_b):
      prob_a, prob_b = jax.device_get((state.clean_prob_a, state.clean_prob_b))
      cfg = self.config.cotrain
      splits = []
      for partner_prob in (prob_b, prob_a):
        mask = labelled_mask(partner_prob, cfg.labelled_threshold, self.config.batch_size,
                             self.num_train - self.unlabelled_batch_size)
        splits.append((meta_ids(mask), meta_ids(~mask), np.asarray(partner_prob, np.float32)))
      self._split_of = (state.clean_prob_a, state.clean_prob_b)
      self._splits = tuple(splits)
    return self._splits

  def member_batch(self, state: PairState, batch: PairBatch, member: int, partner_state):
    """(batch dict on the device, row ids (rows,) int64) of member 0 (A) or 1 (B).

    The step's format (train/step.py); row ids: the training id of each row
    whose weight the step reports (the mixed rows' dominant examples in the
    semi-supervised step). Warm-up steps have no meta or semi-supervised
    part; partner_state: the other member's TrainState (its params and
    BatchNorm statistics go to the semi-supervised step, replicated).
    """
    data, cfg, seed = self.data, self.config, self.member_seeds[member]
    semi = self.semi is not None and not batch.warmup
    prob = None
    if semi:
      labelled, unlabelled, prob = self.semi_splits(state)[member]
      idx = labelled[batches.subset_batch_indices(seed, batch.step, len(labelled),
                                                  cfg.batch_size, 'labelled')]
      uidx = unlabelled[batches.subset_batch_indices(seed, batch.step, len(unlabelled),
                                                     self.unlabelled_batch_size, 'unlabelled')]
    else:
      idx = (batch.index_a, batch.index_b)[member]
    part = {'image': data.train_images[idx], 'label': data.train_labels[idx].astype(np.int32),
            'index': idx.astype(np.int32)}
    rows = idx
    if semi:
      part.update(clean_prob=prob[idx], unlabelled_image=data.train_images[uidx],
                  unlabelled_label=data.train_labels[uidx].astype(np.int32),
                  unlabelled_index=uidx.astype(np.int32))
      rows = np.concatenate([idx, idx, uidx, uidx])
    if not batch.warmup and self.method.uses_meta_set:
      midx = self.meta_indices(state, batch.step)[member]
      part['meta_image'] = data.train_images[midx]
      part['meta_label'] = data.train_labels[midx].astype(np.int32)
      if semi:
        part['meta_clean_prob'] = self.semi_splits(state)[1 - member][2][midx]
    part = jax.device_put(part, self.sharded)
    if semi:
      part['partner_params'] = partner_state.params
      part['partner_batch_stats'] = partner_state.batch_stats
    return part, rows

  # ---- the step ----------------------------------------------------------------------------
  def _warmup(self, state, batch) -> StepResult:
    compiled = not self._warmup_compiled
    self._warmup_compiled = True
    new_state, out = self._warmup_step(state, batch)
    return StepResult(new_state, out, None, bool(jax.device_get(out.finite)), compiled, 0,
                      batch['index'])

  def run_step(self, state: PairState, batch: PairBatch, last_dispatch) -> StepResult:
    """Both members' steps; `last_dispatch`: (A's, B's) dispatch records or None."""
    last_a, last_b = last_dispatch if last_dispatch is not None else (None, None)

    def step(member, member_state, partner_state, last):
      part, rows = self.member_batch(state, batch, member, partner_state)
      if batch.warmup:
        res = self._warmup(member_state, part)
      else:
        res = self.member.run_step(member_state, part, last)
      res.indices = rows
      return res

    res_a = step(0, state.a, state.b, last_a)
    res_b = step(1, state.b, res_a.state, last_b) if res_a.finite else None
    if res_b is None:  # A not finite: B is not stepped, the pair stays as it was
      return StepResult(state.replace(a=res_a.state), res_a.output, (res_a.dispatch, last_b),
                        False, res_a.compiled, res_a.reruns, res_a.indices)
    out_a, out_b = res_a.output, res_b.output
    metrics = {**out_a.metrics,
               **{f'b_{k}': out_b.metrics[k] for k in B_METRICS if k in out_b.metrics}}
    output = StepOutput(metrics=metrics, example_weights=out_a.example_weights,
                        finite=out_a.finite & out_b.finite,
                        dispatch=(out_a.dispatch, out_b.dispatch))
    return StepResult(state.replace(a=res_a.state, b=res_b.state), output,
                      (res_a.dispatch, res_b.dispatch), res_a.finite and res_b.finite,
                      res_a.compiled or res_b.compiled, res_a.reruns + res_b.reruns,
                      res_a.indices)

  # ---- epoch ends: the division ------------------------------------------------------------
  def example_losses(self, member_state) -> np.ndarray:
    """float32 (N,) eval-mode cross-entropy of every training example under its given label.

    Batches of eval_batch_size (the last one zero-padded, its padding dropped).
    """
    out = []
    for real, (images, labels, _) in self.member.padded_batches(self.data.train_images,
                                                                self.data.train_labels):
      losses = self._example_losses(member_state.params, member_state.batch_stats, images,
                                    labels)
      out.append(np.asarray(jax.device_get(losses))[:real])
    return np.concatenate(out)

  def divide(self, state: PairState, epoch: int):
    """(new state, the 'division' LogEvent): both members' divisions (module docstring)."""
    clean = ~self.is_noisy
    div_a, div_b = (divide_member(self.example_losses(member), clean, self.config.cotrain,
                                  self.min_pseudo_clean) for member in (state.a, state.b))
    new = jax.device_put({
        'clean_prob_a': div_a.clean_prob.astype(np.float32),
        'clean_prob_b': div_b.clean_prob.astype(np.float32),
        'pseudo_clean_a': div_a.mask, 'pseudo_clean_b': div_b.mask,
        'division_epoch': np.asarray(epoch, np.int32)}, self.replicated)
    values = {'epoch': epoch, **div_a.event_values('a_'), **div_b.event_values('b_'),
              'overlap': int(np.sum(div_a.mask & div_b.mask))}
    return state.replace(**new), LogEvent('division', values)

  def on_epoch_end(self, state: PairState, epoch: int) -> EpochEnd:
    """Each member's method hook, then (epoch >= warmup_epochs) the division.

    epoch: the number of finished epochs; the division made here is the meta
    sets of epoch `epoch` (counted from 0).
    """
    method, data = self.method, self.data
    state = state.replace(
        a=state.a.replace(method_state=method.on_epoch_end(state.a.method_state, epoch, data)),
        b=state.b.replace(method_state=method.on_epoch_end(state.b.method_state, epoch, data)))
    if epoch < self.warmup_epochs:
      return EpochEnd(state, ())
    state, event = self.divide(state, epoch)
    return EpochEnd(state, (event,))

  # ---- evaluation --------------------------------------------------------------------------
  def evaluate(self, state: PairState) -> dict:
    """Accuracy and loss of the ensemble (mean logits) on the test set, and each member's;
    the ensemble's training fit (`Run.train_fit`)."""
    totals = self.member.test_sums(lambda images, labels, mask: self._pair_eval(
        state.a.params, state.a.batch_stats, state.b.params, state.b.batch_stats,
        images, labels, mask))
    count = max(totals['count'], 1)
    return {'test_accuracy': totals['correct'] / count, 'test_loss': totals['loss_sum'] / count,
            'a_test_accuracy': totals['a_correct'] / count,
            'b_test_accuracy': totals['b_correct'] / count,
            **self.member.train_fit(lambda images, labels, mask: self._pair_fit(
                state.a.params, state.a.batch_stats, state.b.params, state.b.batch_stats,
                images, labels, mask))}
