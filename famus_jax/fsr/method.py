"""FSR (Fast Sample Re-weighting, Zhang & Pfister, ICCV 2021) as a famus_jax method.

One training step (FSR Algorithm 1), inside the shared jitted step:

1. The step has run the training forward once (BatchNorm in training mode):
   head inputs h_i, logits, per-example losses (StepContext). Its images are
   the augmented batch, or with `mixup_form='one_pass'` (MixUp on) the mixed
   images x~_i = lam x_i + (1 - lam) x_perm(i) that `prepare_images` returns
   before the forward (lam, perm in `ctx.mix`); then every step below works
   on that mixed forward, with the mixed targets lam t_i + (1 - lam) t_perm(i).
2. Virtual step on the classifier head only (feature sharing, Sec. 4.2):
   theta* = theta - meta_lr * (optimiser direction of the weighted head
   gradient at eps_i = 1/b, with the optimiser's momentum trace and weight
   decay), closed form from h_i and the logit errors (`head.py`).
3. A class-balanced reward batch of q examples is drawn from the dictionary R
   on the device (its images live in the method state, `dictionary.py`), one
   forward pass of the backbone gives its head inputs r_j (BatchNorm follows
   `config.meta_bn_train_mode`, default batch statistics; its running
   statistics are thrown away; no backward pass), and
   dL_R/d eps_i = -meta_lr * c_g * h_i^T (dL_R/dtheta*) e_i (two matrix
   products).
4. Weights: 'noise' w = max(-grad, 0), 'longtail' w = raw - min(raw) + 1/b
   with raw = 1/b - grad; then w / (sum w + 1e-5). Uniform 1/b before
   `warmup_epochs` (steps 2-3 and the scores still run).
5. Meta-margin score P_i = l_i(theta) - l_i(theta*) of every training example
   of the batch, kept as a per-example EMA (momentum `score_momentum`, Eq. 4-5).
   Two-pass: "before" is the MixUp loss when MixUp is on
   (`score_before='train'`, as the reference code), "after" the clean loss at
   theta*. One-pass (as the reference code): "before" the mixed forward's
   loss at theta, "after" the clean images' loss at theta*, their head inputs
   from one forward of the reward and clean training images together. R is
   refreshed from it on the host after every epoch
   (`on_epoch_end`).
6. Momentum re-labeling (Sec. 4.3): a per-example EMA of the predicted class
   probabilities (of the step's forward: clean in two-pass, mixed in one-pass)
   is the soft target of an extra loss with multiplier p, from
   `relabel_start_epoch` (default: the end of warm-up).
7. The actual update, one backward pass:
   - MixUp off: weights through the step's own backward; re-labeling (and the
     label-smoothing correction) as a logit cotangent on the same forward.
   - MixUp on, `mixup_form='two_pass'` (default): one extra forward/backward
     on the mixed images carries the weighted loss w_i (lam_i l(z~_i, y_i) +
     (1 - lam_i) l(z~_i, y_perm(i))) and, with `mixup_losses='all'`, the
     re-labeling loss (mixed soft targets), as `extra_grads`; the clean
     forward gets no backward unless `mixup_losses='weighted'` puts the
     re-labeling loss on it (paper Sec. 4.3).
   - MixUp on, `mixup_form='one_pass'`: w_i times example i's whole MixUp loss
     and the re-labeling loss (mixed soft target on the same logits) as one
     logit cotangent through the step's own backward: one forward and one
     backward on the training batch, BatchNorm statistics from the mixed
     forward.

Where this follows the paper and where the public reference code, and why, is
listed in famus_jax/fsr/__init__.py and explained in docs/design.md.
"""

from typing import NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from famus_jax.data import mixup
from famus_jax.data.augment import train_augment_fn
from famus_jax.data.mixup import MixUp, mix_rows
from famus_jax.errors import ConfigError
from famus_jax.fsr import dictionary as dict_lib
from famus_jax.fsr import head as head_lib
from famus_jax.fsr.config import check_config, image_shape_of
from famus_jax.methods.base import Method, StepContext, WeightOutput

# Sub-seed stream of config.seed for the initial (random, balanced) dictionary.
DICTIONARY_STREAM = 0x4653  # 'FS'


def head_trace(opt_state) -> Optional[dict]:
  """The optimiser's momentum trace of params['head'] (None if there is none)."""
  if opt_state is None:
    return None
  is_trace = lambda x: isinstance(x, optax.TraceState)
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_trace) if is_trace(s)]
  if len(found) != 1 or not isinstance(found[0].trace, dict):
    return None
  return found[0].trace.get('head')


def _like(new, old):
  """`new` as a device array placed like `old` (so the jitted step is not re-traced)."""
  new = jnp.asarray(new, dtype=getattr(old, 'dtype', None))
  sharding = getattr(old, 'sharding', None)
  return jax.device_put(new, sharding) if sharding is not None else new


class MetaStep(NamedTuple):
  """The head-only meta step of one training batch (all (n,) unless noted)."""
  weights: jnp.ndarray          # FSR weights (normalised), before the warm-up switch
  reward: head_lib.RewardGradient
  head_star: dict               # the virtual head theta*
  targets: jnp.ndarray          # (n, C) training targets (smoothed; one-pass: mixed)
  loss_before: jnp.ndarray      # l_i(theta) on the step's forward (clean; one-pass: mixed)
  loss_after: jnp.ndarray       # l_i(theta*) on the same forward


class OnePass(NamedTuple):
  """What `FSR.prepare_images` keeps for `weights` in the one-pass form (`ctx.mix`)."""
  mix: MixUp
  clean_images: jnp.ndarray     # (n, H, W, ch) the augmented batch before mixing


def rms_normalized(v: jnp.ndarray) -> jnp.ndarray:
  """v / sqrt(mean(v^2) + 1e-8) over the whole (n, C) array (the reference's logit norm)."""
  return v * jax.lax.rsqrt(jnp.mean(jnp.square(v)) + 1e-8)


class FSR(Method):
  """Fast Sample Re-weighting: dictionary as proxy reward data, head-only meta step."""
  name = 'fsr'
  uses_meta_set = False

  def __init__(self, config):
    check_config(config)
    f = config.fsr
    self.dictionary_size = int(f.dictionary_size)
    self.reward_batch_size = int(f.reward_batch_size)
    self.meta_lr = float(f.meta_lr)
    self.score_momentum = float(f.score_momentum)
    self.warmup_epochs = int(f.warmup_epochs)
    self.weight_mode = f.weight_mode
    self.relabel = bool(f.relabel) and f.relabel_weight > 0
    self.relabel_momentum = float(f.relabel_momentum)
    self.relabel_target = f.relabel_target
    self.relabel_weight = float(f.relabel_weight)
    self.relabel_start_epoch = (int(f.relabel_start_epoch) if f.relabel_start_epoch >= 0
                                else self.warmup_epochs)
    self.mixup_alpha = float(f.mixup_alpha)
    self.mixup_form = f.mixup_form
    self.mixup_lambda = f.mixup_lambda
    # 'all': the re-labeling loss on the mixed forward too (reference); 'weighted': MixUp on the
    # weighted loss only, re-labeling on the clean forward (paper Sec. 4.3; two-pass form only).
    self.relabel_on_mixed = f.mixup_losses == 'all'
    # One-pass MixUp: the step's own forward runs on the mixed images (`prepare_images`).
    self.one_pass = self.mixup_form == 'one_pass' and self.mixup_alpha > 0
    self.label_smoothing = float(f.label_smoothing)
    self.score_before = f.score_before
    opt = config.optimizer
    self.direction = head_lib.optimizer_direction(float(opt.momentum), bool(opt.nesterov),
                                                  float(opt.weight_decay))
    self.reward_bn_train = bool(config.meta_bn_train_mode)
    self.augment_config = config.augment  # the training crop (config.augment.crop) and flip
    self.seed = int(config.seed)
    self.image_shape = image_shape_of(config)

  # ---- state ---------------------------------------------------------------

  def per_class(self, num_classes: int) -> int:
    if self.dictionary_size % num_classes:
      raise ConfigError(f'config.fsr.dictionary_size={self.dictionary_size} must be a multiple '
                        f'of the {num_classes} classes (the dictionary is class-balanced)')
    return self.dictionary_size // num_classes

  def init_state(self, rng, params, num_train):
    """Per-example score / visit / prediction arrays and a placeholder dictionary.

    The dictionary's ids and images are filled by `on_train_start` (a
    balanced random draw; it needs the labels) and then by `on_epoch_end`.
    """
    del rng
    num_classes = params['head']['bias'].shape[0]
    k = self.per_class(num_classes)
    shape = self.image_shape or (1, 1, 1)  # a placeholder: on_train_start sets the images
    state = {
        'epoch': jnp.zeros((), jnp.int32),
        'dict_ids': jnp.zeros((num_classes, k), jnp.int32),
        'dict_images': jnp.zeros((num_classes, k) + tuple(shape), jnp.uint8),
        'dict_purity': jnp.full((), jnp.nan, jnp.float32),
        'image_mean': jnp.zeros((shape[-1],), jnp.float32),
        'image_std': jnp.ones((shape[-1],), jnp.float32),
        'score': jnp.zeros((num_train,), jnp.float32),
        'visits': jnp.zeros((num_train,), jnp.int32),
    }
    if self.relabel:
      state['pred'] = jnp.zeros((num_train, num_classes), jnp.float32)
    return state

  def _with_dictionary(self, method_state, ids: np.ndarray, data) -> dict:
    """A copy of the state holding dictionary `ids` (C, k), its images and purity."""
    images = np.asarray(data.train_images[ids])  # an image-file source decodes only these
    new = dict(method_state)
    new['dict_ids'] = _like(ids, method_state['dict_ids'])
    new['dict_images'] = _like(images, method_state['dict_images'])
    new['dict_purity'] = _like(dict_lib.purity(ids, data.train_labels, data.train_clean_labels),
                               method_state['dict_purity'])
    new['image_mean'] = _like(np.asarray(data.mean, np.float32), method_state['image_mean'])
    new['image_std'] = _like(np.asarray(data.std, np.float32), method_state['image_std'])
    return new

  def on_train_start(self, method_state, host_data):
    """R_0: a class-balanced random draw by (noisy) label (FSR Algorithm 1, line 1)."""
    num_classes, k = method_state['dict_ids'].shape
    rng = np.random.default_rng([self.seed, DICTIONARY_STREAM])
    ids = dict_lib.balanced_random_ids(host_data.train_labels, num_classes, k, rng)
    return self._with_dictionary(method_state, ids, host_data)

  def on_epoch_end(self, method_state, epoch, host_data):
    """Refresh R with the per-class best momentum meta-margin scores (Eq. 4)."""
    num_classes, k = method_state['dict_ids'].shape
    scores, visits = jax.device_get((method_state['score'], method_state['visits']))
    ids = dict_lib.top_score_ids(host_data.train_labels, scores, visits, num_classes, k)
    new = self._with_dictionary(method_state, ids, host_data)
    new['epoch'] = _like(np.int32(epoch), method_state['epoch'])
    return new

  # ---- the step ------------------------------------------------------------

  def draw_reward_batch(self, method_state, rng):
    """(float images (q, H', W', ch) augmented and normalised, labels (q,)) from R.

    Augmented as the training batch (`train_augment_fn`: config.augment.crop's pad crop
    or random resized crop to crop_size, and the flip).
    """
    num_classes, k = method_state['dict_ids'].shape
    slot_rng, aug_rng = jax.random.split(rng)
    rows, cols = dict_lib.reward_slots(slot_rng, num_classes, k, self.reward_batch_size)
    augment = train_augment_fn(self.augment_config, method_state['image_mean'],
                               method_state['image_std'])
    images = augment(method_state['dict_images'][rows, cols], aug_rng)
    return images, rows

  def reward_features(self, ctx: StepContext, images):
    """Head inputs (q, D) of the reward batch; its BatchNorm statistics are discarded."""
    (_, features), _ = ctx.apply_fn(ctx.params, ctx.batch_stats, images, self.reward_bn_train)
    return jax.lax.stop_gradient(features)

  def reward_and_clean_features(self, ctx: StepContext, reward_images, clean_images):
    """(reward head inputs (q, D), clean training head inputs (n, D)), one forward, no backward.

    The one-pass form's look-ahead forward: the reward batch and the clean
    (un-mixed) training batch in one pass of the backbone (BatchNorm as
    `reward_features`, over the q + n rows together, as the reference code's
    look-ahead network sees them); statistics discarded.
    """
    q = reward_images.shape[0]
    features = self.reward_features(ctx, jnp.concatenate([reward_images, clean_images]))
    return features[:q], features[q:]

  def draw_mixup(self, rng, n: int, dtype) -> MixUp:
    """lam and a random partner permutation.

    `mixup_lambda='batch'`: one lam ~ Beta(alpha, alpha) for the batch (MixUp,
    Zhang et al. 2018). 'example_max': lam_i ~ Beta(alpha, alpha) per example,
    then lam_i = max(lam_i, 1 - lam_i), so every mixed example is dominated by
    its own image and label (MixMatch Eq. 8-9; the FSR reference code).
    """
    per_example = self.mixup_lambda == 'example_max'
    return mixup.draw(rng, n, self.mixup_alpha, per_example=per_example, dominant=per_example,
                      dtype=dtype)

  def prepare_images(self, images, rng):
    """One-pass MixUp: the step's single training forward sees the mixed images.

    Two-pass form (or MixUp off): the images unchanged, no randomness used.
    The MixUp key is the one `weights` derives from the same step key
    (split(rng)[1]), so both forms draw the same lam, partners and reward batch.
    """
    if not self.one_pass:
      return images, None
    _, mix_rng = jax.random.split(rng)
    mix = self.draw_mixup(mix_rng, images.shape[0], images.dtype)
    return mix_rows(images, mix), OnePass(mix, images)

  def meta_step(self, ctx: StepContext, reward_features, reward_labels,
                targets=None) -> MetaStep:
    """Steps 2-4 of the module docstring, closed form from the head inputs.

    targets: (n, C) the training targets of the step's forward; default the
    (smoothed) noisy labels; the one-pass form passes the mixed targets.
    """
    n = ctx.losses.shape[0]
    if targets is None:
      targets = head_lib.smoothed_targets(ctx.labels, ctx.num_classes, self.label_smoothing)
    errors = jax.nn.softmax(ctx.logits) - targets
    head = ctx.params['head']
    eps = jnp.full((n,), 1.0 / n, ctx.features.dtype)
    head_star = head_lib.virtual_head(head, ctx.features, errors, eps, head_trace(ctx.opt_state),
                                      self.meta_lr, self.direction)
    reward = head_lib.eps_gradient(head_star, ctx.features, errors, reward_features,
                                   reward_labels, self.meta_lr, self.direction)
    return MetaStep(
        weights=head_lib.weights_from_gradient(reward.grad_eps, self.weight_mode),
        reward=reward, head_star=head_star, targets=targets,
        loss_before=head_lib.soft_cross_entropy(ctx.logits, targets),
        loss_after=head_lib.soft_cross_entropy(head_lib.head_logits(head_star, ctx.features),
                                               targets))

  def weights(self, ctx: StepContext, method_state, batch, rng):
    del batch
    n, num_classes = ctx.losses.shape[0], ctx.num_classes
    ms = method_state
    reward_rng, mix_rng = jax.random.split(rng)
    reward_images, reward_labels = self.draw_reward_batch(ms, reward_rng)
    targets = head_lib.smoothed_targets(ctx.labels, num_classes, self.label_smoothing)
    if self.one_pass:
      if ctx.mix is None:
        raise ValueError("config.fsr.mixup_form='one_pass' needs the step's forward on the "
                         'mixed images: build the context with FSR.prepare_images '
                         '(make_context_fn(..., prepare_images=method.prepare_images))')
      clean_targets, targets = targets, mix_rows(targets, ctx.mix.mix)
      reward_features, clean_features = self.reward_and_clean_features(
          ctx, reward_images, ctx.mix.clean_images)
      meta = self.meta_step(ctx, reward_features, reward_labels, targets)
      # The margin's "after": the clean images' loss at theta* (the reference code's).
      clean_after = head_lib.soft_cross_entropy(
          head_lib.head_logits(meta.head_star, clean_features), clean_targets)
    else:
      meta = self.meta_step(ctx, self.reward_features(ctx, reward_images), reward_labels,
                            targets)

    epoch = ms['epoch']
    reweighting = epoch >= self.warmup_epochs
    weights = jnp.where(reweighting, meta.weights, jnp.full((n,), 1.0 / n, meta.weights.dtype))

    idx = ctx.indices
    seen = ms['visits'][idx] > 0
    new_state = dict(ms)
    probs = jax.nn.softmax(ctx.logits)
    relabel_targets, relabel_scale = None, None
    if self.relabel:
      relabel_targets, rows = self.relabel_update(ms['pred'][idx], seen, ctx.logits, probs)
      new_state['pred'] = ms['pred'].at[idx].set(rows)
      relabel_scale = self.relabel_weight * (epoch >= self.relabel_start_epoch).astype(jnp.float32)

    metrics = {
        'fsr_reweighting': reweighting.astype(jnp.float32),
        'fsr_zero_weight_fraction': jnp.mean(meta.weights <= 0),
        'fsr_reward_loss': meta.reward.reward_loss,
        'fsr_reward_accuracy': meta.reward.reward_accuracy,
        'fsr_dict_purity': ms['dict_purity'],
        'fsr_epoch': epoch.astype(jnp.float32),
    }

    if self.one_pass:
      # Everything on the one mixed forward: w_i times the whole MixUp loss of example i,
      # CE(z~_i, lam t_i + (1 - lam) t_perm(i)), and re-labeling with the mixed soft
      # target, as one logit cotangent through the step's own backward.
      metrics['weighted_loss'] = jnp.sum(weights * meta.loss_before)
      cotangent = weights[:, None] * (probs - targets)
      if self.relabel:
        soft = mix_rows(relabel_targets, ctx.mix.mix)
        metrics['fsr_relabel_loss'] = jnp.mean(head_lib.soft_cross_entropy(ctx.logits, soft))
        cotangent = cotangent + (relabel_scale / n) * (probs - soft)
      out = dict(weights=None, logit_cotangent=cotangent)
      before, after = meta.loss_before, clean_after
    elif self.mixup_alpha > 0:
      on_mixed = relabel_targets if self.relabel_on_mixed else None
      grads, (weighted_loss, relabel_loss, mixed_losses) = self._mixup_gradient(
          ctx, mix_rng, weights, targets, on_mixed, relabel_scale)
      metrics['weighted_loss'] = weighted_loss
      cotangent = None
      if self.relabel and not self.relabel_on_mixed:
        # Paper: MixUp on the weighted loss only; re-labeling on the clean forward, whose
        # backward then runs too (a second training backward pass).
        relabel_loss = jnp.mean(head_lib.soft_cross_entropy(ctx.logits, relabel_targets))
        cotangent = (relabel_scale / n) * (probs - relabel_targets)
      if self.relabel:
        metrics['fsr_relabel_loss'] = relabel_loss
      out = dict(weights=None, extra_grads=grads, logit_cotangent=cotangent)
      before = mixed_losses if self.score_before == 'train' else meta.loss_before
      after = meta.loss_after
    else:
      metrics['weighted_loss'] = jnp.sum(weights * meta.loss_before)
      cotangent = None
      if self.label_smoothing:
        # The step's backward uses softmax - onehot; smoothing adds onehot - target.
        onehot = jax.nn.one_hot(ctx.labels, num_classes, dtype=targets.dtype)
        cotangent = weights[:, None] * (onehot - targets)
      if self.relabel:
        metrics['fsr_relabel_loss'] = jnp.mean(
            head_lib.soft_cross_entropy(ctx.logits, relabel_targets))
        relabel_cotangent = (relabel_scale / n) * (probs - relabel_targets)
        cotangent = relabel_cotangent if cotangent is None else cotangent + relabel_cotangent
      out = dict(weights=weights, logit_cotangent=cotangent)
      before, after = meta.loss_before, meta.loss_after

    # Momentum meta-margin score (Eq. 4-5); the first visit initialises the EMA.
    margins = before - after
    m = self.score_momentum
    new_state['score'] = ms['score'].at[idx].set(
        jnp.where(seen, m * ms['score'][idx] + (1 - m) * margins, margins))
    new_state['visits'] = ms['visits'].at[idx].add(1)
    metrics['fsr_meta_margin'] = jnp.mean(margins)
    return WeightOutput(method_state=new_state, metrics=metrics, example_weights=weights * n,
                        **out)

  def relabel_update(self, old, seen, logits, probs):
    """(re-labeling targets (n, C), new EMA rows (n, C)) of the batch (FSR Eq. 7).

    old: the batch's stored EMA rows; seen: (n,) visited before; logits, probs:
    the step's forward. `relabel_target='prob_ema'`: the EMA of softmax
    predictions, y^ <- b y^ + (1 - b) p (the current prediction on a first
    visit), target = the EMA before this step. 'logit_ema' (the reference
    code): the EMA of logits, u <- b rms(u) + (1 - b) z with rms the batch's
    RMS normalisation, target = softmax(rms(u)) before this step (uniform on a
    first visit). b = `relabel_momentum`.
    """
    b = self.relabel_momentum
    if self.relabel_target == 'logit_ema':
      normalized = rms_normalized(old)
      return jax.nn.softmax(normalized), b * normalized + (1 - b) * logits
    targets = jnp.where(seen[:, None], old, probs)
    return targets, jnp.where(seen[:, None], b * old + (1 - b) * probs, probs)

  def _mixup_gradient(self, ctx, rng, weights, targets, relabel_targets, relabel_scale):
    """Gradient of the weighted MixUp loss (+ re-labeling on the same mixed forward).

    Mixed example i = lam_i x_i + (1 - lam_i) x_perm(i) (`draw_mixup`); its
    weight w_i multiplies its whole MixUp loss (as the reference code):
      w_i (lam_i l(z~_i, y_i) + (1 - lam_i) l(z~_i, y_perm(i))).
    relabel_targets (n, C) or None: re-labeling with the mixed soft target
    lam_i y^_i + (1 - lam_i) y^_perm(i) on the same logits (`mixup_losses='all'`).
    Returns (grads, (weighted loss, re-labeling loss, (n,) unweighted mixed
    losses lam_i l(z~_i, y_i) + (1 - lam_i) l(z~_i, y_perm(i)))).
    """
    n = ctx.losses.shape[0]
    mix = self.draw_mixup(rng, n, ctx.images.dtype)
    lam, perm = mix
    mixed = mix_rows(ctx.images, mix)

    def loss_fn(params):
      (logits, _), _ = ctx.apply_fn(params, ctx.batch_stats, mixed, True)
      logp = jax.nn.log_softmax(logits)
      own = -jnp.sum(targets * logp, axis=-1)
      partner = -jnp.sum(targets[perm] * logp, axis=-1)
      weighted = jnp.sum(weights * (lam * own + (1 - lam) * partner))
      relabel = jnp.zeros((), weighted.dtype)
      total = weighted
      if relabel_targets is not None:
        soft = mix_rows(relabel_targets, mix)
        relabel = jnp.mean(-jnp.sum(soft * logp, axis=-1))
        total = total + relabel_scale * relabel
      mixed_losses = jax.lax.stop_gradient(lam * own + (1 - lam) * partner)
      return total, (weighted, relabel, mixed_losses)

    return jax.grad(loss_fn, has_aux=True)(ctx.params)


def create_fsr(config) -> FSR:
  """The method `config.method = 'fsr'` selects (see famus_jax.methods)."""
  if config.num_meta > 0:
    logging.warning('FSR uses no clean meta set, but config.num_meta=%d clean images are held '
                    'out of the training set; set config.num_meta=0 to train on them.',
                    config.num_meta)
  return FSR(config)
