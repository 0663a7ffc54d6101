"""The FaMUS meta-gradient estimator: sampled layers, samplers, L_r, L_g.

One call, inside the jitted step, after the virtual step (FaMUS Alg. 1):

 1. Sampler inputs x_l = Avg-Pool of layer l's weighted training gradient of
    the virtual step (MW-Net). L2R's virtual step is the identity (eps = 0,
    no gradient is computed), so its input is defined as the Avg-Pool of the
    uniformly weighted training gradient sum_i (1/n) grad L_i
    (`l2r_sampler_input='uniform_grad'`, one VJP of the step's linearisation,
    pruned by XLA to the candidate layers and above) or of the real
    optimiser's momentum buffer (`'momentum'`, an EMA of the weighted training
    gradients actually applied; free).
 2. r = Gumbel-softmax sample of every sampler (strategy 'learned'), or a
    fixed / random / block mask (the Table 4 baselines); the active set
    A = {candidates with r_l = 1} + always-on layers.
 3. The estimate, FaMUS Eq. 9, in eps space:
        d_eps_i = -alpha * sum_{l in A} < v_l, grad_{w_l} L_i(w) >,
    (in a base's logit space, MLC: d_c = -alpha * J v_A, the logits' JVP of
    the same masked tangent; `methods/coefficient_space.py`),
    v = grad_{w_hat} L^val(w_hat) on the layers >= this variant's static floor
    (restricted reverse pass), the active mask applied to the JVP tangent.
    In value w_hat is the *full* virtual step (every layer moves), and only
    the second-order path of layers outside A is cut: exactly the reference
    code's semantics, `reference_coefficient_gradient(cut_layers=not A)`.
 4. The meta update direction for the meta model:
        g_theta = P^T (d_eps + lambda2 * dL_g/d eps),   P^T = the base's pullback,
    i.e. g' (Eq. 9) plus lambda2 * grad_theta L_g (`objective.py`; MW-Net only:
    L2R has no meta parameters, its L_g is reported only).
 5. The samplers' update (SGD with momentum, lr delta) on
        L^val = L_c + lambda1 * L_r + lambda2 * L_g     (Eq. 12).

How r enters L_c (the design decision). In the reference code the gate is
w_hat_l = w_l - alpha * (r_l g_l + (1 - r_l) stop_gradient(g_l)), so
d w_hat / d r_l = -alpha (g_l - g_l) = 0: the validation loss gives the samplers
no gradient at all, only L_r does. Here r acts where it acts in the algorithm:
on the meta update. With g_l the layer-l part of the meta gradient and
g'(r) = sum_l r_l g_l, the meta model moves to theta' = theta - beta g'(r), and
to first order

    L_c(theta') ~ L_c(theta) - beta < g_hat, g'(r) >,

with g_hat = stop_gradient(g'(r)) the current (detached) estimate of
grad_theta L_c. We use the scale-free version (`lc_normalize=True`, default)

    L_c~(r) = -lc_weight * < g_hat, g'(r) > / ||g_hat||^2,
    dL_c~/dr_l = -lc_weight * < g_hat, g_l > / ||g_hat||^2,

the (negative) share of the estimate's first-order decrease that layer l
contributes (the shares of the active layers sum to -lc_weight). With
`lc_normalize=False` and lc_weight = beta it is the literal linearisation,
whose scale (beta ||g||^2, ~1e-5) is negligible next to lambda1 * L_r: the
samplers would again learn from L_r alone. The gradient is applied to the
active layers only (r_l = 1; their g_l is what the step computed); inactive
layers learn from L_r (and through the shared inputs). This keeps the update
independent of the compiled variant that ran. All of it costs one extra VJP
of the step's linearisation restricted (by XLA's dead-code elimination) to
the layers >= the floor: with c = dL_c~/d(d_eps) (through the pullback),
dL_c~/dr_l = -alpha * < (sum_i c_i grad_w L_i)_l, v_l >.

L_r = (sum_l r_l - K)^2 with the straight-through gradient of the hard sample.
L_g does not depend on r (it trains theta only).
"""

import dataclasses
from typing import NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from famus_jax.famus import layer_sets as ls_lib
from famus_jax.famus import layerwise
from famus_jax.famus import objective
from famus_jax.famus import samplers as sm
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods.coefficient_space import PER_EXAMPLE
from famus_jax.methods.meta_reweighting import Estimate
from famus_jax.models import avg_pool_gradient, get_layer, layer_feature_size, layer_names

STRATEGIES = ('learned', 'all', 'block', 'random', 'static')
L2R_SAMPLER_INPUTS = ('uniform_grad', 'momentum')
_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class FamusSettings:
  """The `config.famus` fields the estimator reads; their defaults live in famus_jax/config.py."""
  strategy: str
  candidates: str
  always_on: str
  target_active: float
  lambda_r: float
  lambda_g: float
  lg_form: str
  lc_weight: float
  lc_normalize: bool
  sampler_lr: float
  sampler_momentum: float
  sampler_hidden: int
  sampler_depth: int
  standardize_inputs: bool
  temperature: float
  block: int
  num_random: int
  static_layers: str
  floor_buckets: str
  jvp: str
  l2r_sampler_input: str
  variance_decay: float
  guess_window: int
  exact_steps: int

  @classmethod
  def from_config(cls, famus_cfg) -> 'FamusSettings':
    return cls(**{f.name: famus_cfg[f.name] for f in dataclasses.fields(cls)})


@flax.struct.dataclass
class DispatchRecord:
  """What the host-side variant dispatch (`method.py`) reads after a step, all () int32.

  step: the step counter; bucket_run / diagnostics_run: the compiled variant
  that ran; bucket_needed: the floor bucket this step's active set needed;
  next_bucket: the guess for the next step (learned: this step's need;
  random: the next step's exact need; fixed strategies: their only bucket);
  -1 on a step without a meta update (`FamusEstimator.idle_dispatch`).
  """
  step: jnp.ndarray
  bucket_run: jnp.ndarray
  diagnostics_run: jnp.ndarray
  bucket_needed: jnp.ndarray
  next_bucket: jnp.ndarray


class ActiveSet(NamedTuple):
  """Phase 1-2 of a step: which candidate layers take part.

  r: (num candidates,) 0/1 mask (no gradient); full_mask: (num layers,) with
  the always-on layers set; sampler_x / noise / p_on: the samplers' inputs,
  Gumbel noise and probabilities of "on" (learned strategy only, else None);
  next_guess: () int32 floor bucket
  of the next step when it is known in advance (random), else None.
  """
  r: jnp.ndarray
  full_mask: jnp.ndarray
  sampler_x: Optional[jnp.ndarray]
  noise: Optional[jnp.ndarray]
  p_on: Optional[jnp.ndarray]
  next_guess: Optional[jnp.ndarray]


class LayerwiseEstimate(NamedTuple):
  """Phase 3: the estimate of FaMUS Eq. 9 and what it was computed from.

  val_loss: () meta loss at w_hat; val_aux: the validation forward's outputs
  (logits, features, labels) or None; val_grad: {'layer/param': v} on the
  layers >= the variant's floor; d_eps: (n,) the layer-restricted dL^val/d eps;
  g_hat: its pullback to the meta parameters (d_eps itself for L2R); g_norm: ().
  """
  val_loss: jnp.ndarray
  val_aux: Optional[dict]
  val_grad: dict
  d_eps: jnp.ndarray
  g_hat: object
  g_norm: jnp.ndarray


def _ema_update(stats, value, decay):
  """Bias-corrected EMA of a scalar and of its square (running variance)."""
  return {'mean': decay * stats['mean'] + (1 - decay) * value,
          'sq': decay * stats['sq'] + (1 - decay) * value ** 2,
          'weight': decay * stats['weight'] + (1 - decay)}


def _ema_std(stats):
  w = jnp.maximum(stats['weight'], _TINY)
  mean, sq = stats['mean'] / w, stats['sq'] / w
  return jnp.sqrt(jnp.maximum(sq - mean ** 2, 0.0))


def _ema_init():
  return {'mean': jnp.zeros((), jnp.float32), 'sq': jnp.zeros((), jnp.float32),
          'weight': jnp.zeros((), jnp.float32)}


def _raw_key(key):
  """A uint32 key array (checkpointable) from a typed or raw PRNG key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def _tree_vdot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class FamusEstimator:
  """FaMUS's layer-wise, sampled meta-gradient estimator (module docstring).

  `bucket` is the static floor bucket of the compiled variant (None: the
  lowest, i.e. every layer can take part); `diagnostics` adds the exact meta
  gradient on the same batch for comparison (a separate compiled variant).
  The estimator keeps the model's layer bookkeeping (`layer_sets`), computed
  from the params tree when first needed.
  """
  name = 'famus'

  def __init__(self, settings: FamusSettings, bucket: Optional[int] = None,
               diagnostics: bool = False, diagnostics_enabled: bool = False):
    self.settings = settings
    self.bucket = bucket
    self.diagnostics = diagnostics
    self.diagnostics_enabled = diagnostics_enabled or diagnostics
    self.tx = optax.sgd(settings.sampler_lr, momentum=settings.sampler_momentum)
    self._sets = None

  def specialise(self, bucket: int, diagnostics: bool) -> 'FamusEstimator':
    out = FamusEstimator(self.settings, bucket, diagnostics, self.diagnostics_enabled)
    out._sets = self._sets  # pylint: disable=protected-access
    return out

  # ---- static layer bookkeeping -------------------------------------------
  def layer_sets(self, params) -> ls_lib.LayerSets:
    if self._sets is None:
      s = self.settings
      self._sets = ls_lib.build_layer_sets(layer_names(params), s.candidates, s.always_on,
                                           s.floor_buckets)
    return self._sets

  def set_layer_order(self, names) -> None:
    """Use `names` as the model's layers in forward order (a model outside the naming
    scheme of famus_jax.models, whose order the names alone do not give)."""
    s = self.settings
    self._sets = ls_lib.build_layer_sets(list(names), s.candidates, s.always_on, s.floor_buckets)

  @property
  def cached_layer_sets(self) -> Optional[ls_lib.LayerSets]:
    """The layer sets if a params tree was already seen (host side), else None."""
    return self._sets

  def fixed_active_layers(self, sets: ls_lib.LayerSets) -> Optional[list]:
    """The active set of the non-learned, non-random strategies (None otherwise)."""
    s = self.settings
    if s.strategy == 'all':
      return list(sets.names)
    if s.strategy == 'block':
      chosen = ls_lib.block_layers(sets.names, s.block)
    elif s.strategy == 'static':
      if s.static_layers == 'top':
        k = int(round(s.target_active))
        chosen = list(sets.candidates[-k:]) if k > 0 else []
      else:
        chosen = ls_lib.match_layers(sets.names, ls_lib.split_patterns(s.static_layers),
                                     'famus.static_layers')
    else:
      return None
    return [n for n in sets.names if n in chosen or n in sets.always_on]

  # ---- state ----------------------------------------------------------------
  def init(self, rng, params):
    s, sets = self.settings, self.layer_sets(params)
    sampler_rng, random_rng = jax.random.split(rng)
    num = len(sets.candidates)
    sizes = [layer_feature_size(get_layer(params, n)) for n in sets.candidates] or [1]
    p_on = s.target_active / max(num, 1)
    sampler_params = sm.init_samplers(sampler_rng, sizes, s.sampler_hidden, s.sampler_depth,
                                      p_on)
    state = {
        'samplers': sampler_params,
        'sampler_opt': self.tx.init(sampler_params),
        'active_counts': jnp.zeros((num,), jnp.float32),
        'num_steps': jnp.zeros((), jnp.int32),
        'random_key': _raw_key(random_rng),
        'grad_norm_ema': _ema_init(),
    }
    if self.diagnostics_enabled:
      nan = jnp.full((), jnp.nan, jnp.float32)  # strongly typed: same avals as the step's outputs
      state['diag'] = {'cosine': nan, 'rel_err': nan, 'eps_cosine': nan,
                       'step': jnp.full((), -1, jnp.int32),
                       'estimate': _ema_init(), 'exact': _ema_init()}
    return state

  # ---- pieces -----------------------------------------------------------------
  def _sampler_source_grads(self, ctx, train_grads):
    """The gradients whose Avg-Pool feeds the samplers (see module docstring)."""
    if train_grads is not None:
      return train_grads
    if self.settings.l2r_sampler_input == 'uniform_grad':
      n = ctx.losses.shape[0]
      return ctx.train_vjp(jnp.full((n,), 1.0 / n, ctx.losses.dtype))
    trace = optax.tree_utils.tree_get(ctx.opt_state, 'trace')
    if trace is None:
      raise ValueError("famus.l2r_sampler_input='momentum' needs an optimiser with momentum")
    return trace

  def _random_mask(self, key, step, num_candidates):
    k = jax.random.fold_in(key, step)
    s = min(self.settings.num_random, num_candidates)
    chosen = jax.random.choice(k, num_candidates, (s,), replace=False)
    return jnp.zeros((num_candidates,), jnp.float32).at[chosen].set(1.0)

  def _bucket_needed(self, sets, full_mask):
    """Bucket index (traced int32) of the lowest active layer of a (L_all,) mask."""
    idx = jnp.arange(len(sets.names))
    floor = jnp.min(jnp.where(full_mask > 0, idx, len(sets.names) - 1))
    floors = jnp.asarray(sets.bucket_floors)
    return floor, jnp.sum(floors <= floor).astype(jnp.int32) - 1

  def _full_mask(self, sets, r):
    mask = jnp.zeros((len(sets.names),), jnp.float32)
    if sets.candidates:
      mask = mask.at[jnp.asarray(sets.candidate_index)].set(r)
    if sets.always_on:
      mask = mask.at[jnp.asarray(sets.always_on_index)].set(1.0)
    return mask

  def idle_dispatch(self, ctx) -> DispatchRecord:
    """The record of a step without a meta update (`config.meta.update_every` > 1).

    Every variant covers such a step (bucket_needed = the highest bucket) and it says nothing
    about the next meta step's floor (next_bucket = -1): the policy keeps its last guess.
    """
    sets = self.layer_sets(ctx.params)
    bucket = 0 if self.bucket is None else self.bucket
    return DispatchRecord(
        step=ctx.step.astype(jnp.int32), bucket_run=jnp.int32(bucket),
        diagnostics_run=jnp.int32(self.diagnostics),
        bucket_needed=jnp.int32(len(sets.bucket_floors) - 1), next_bucket=jnp.int32(-1))

  # ---- the estimator call: FaMUS Alg. 1, one phase per method -------------
  def __call__(self, ctx, w_hat, train_grads, state, rng, eps=None, pullback=None,
               space=PER_EXAMPLE):
    """The Estimate (d_eps (n,), new state, metrics, DispatchRecord) of one step.

    eps, pullback: the base's virtual coefficients and d_eps -> meta-parameter
    gradient (MW-Net, MLC). With pullback None (L2R) the meta parameters are eps
    itself and L_g trains nothing. The returned d_eps includes
    lambda2 * dL_g/d eps when a pullback is given. space: the base's coefficient
    space (`coefficient_space.py`); d_eps has the coefficients' shape.
    """
    sets = self.layer_sets(ctx.params)
    active = self.active_set(ctx, train_grads, state, rng, sets)
    estimate = self.layerwise_estimate(ctx, w_hat, active.full_mask, pullback, sets, space)
    l_g, d_eps_meta = self.gradient_matching(ctx, estimate, eps, pullback, space)
    new_state, metrics = self.update_samplers(ctx, state, active, estimate, pullback, sets,
                                              space)
    new_state['grad_norm_ema'] = _ema_update(state['grad_norm_ema'], estimate.g_norm,
                                             self.settings.variance_decay)
    if self.diagnostics_enabled:
      new_state['diag'], diag_metrics = self.diagnose(ctx, w_hat, state['diag'], estimate,
                                                      pullback, space)
      metrics.update(diag_metrics)
    floor_needed, bucket_needed = self._bucket_needed(sets, active.full_mask)
    bucket = 0 if self.bucket is None else self.bucket
    dispatch = DispatchRecord(
        step=ctx.step.astype(jnp.int32), bucket_run=jnp.int32(bucket),
        diagnostics_run=jnp.int32(self.diagnostics), bucket_needed=bucket_needed,
        next_bucket=bucket_needed if active.next_guess is None else active.next_guess)
    metrics.update({
        'meta_loss': estimate.val_loss,
        'famus_active': active.r,
        'famus_active_counts': new_state['active_counts'],
        'famus_num_sampled': jnp.sum(active.r),
        'famus_num_active': jnp.sum(active.full_mask),
        'famus_L_r': objective.selection_loss(jnp.sum(active.r), self.settings.target_active),
        'famus_L_g': l_g,
        'famus_floor': floor_needed,
        'famus_bucket_needed': bucket_needed,
        'famus_estimate_norm': estimate.g_norm,
        'famus_estimate_norm_std': _ema_std(new_state['grad_norm_ema']),
    })
    return Estimate(d_eps_meta, new_state, metrics, dispatch)

  def active_set(self, ctx, train_grads, state, rng, sets) -> ActiveSet:
    """Phases 1-2: the samplers' draw r (learned), or the strategy's fixed / random mask."""
    s = self.settings
    num_cand = len(sets.candidates)
    x = noise = p_on = next_guess = None
    if s.strategy == 'learned':
      source = self._sampler_source_grads(ctx, train_grads)
      width = max(layer_feature_size(get_layer(ctx.params, n)) for n in sets.candidates)
      x, xmask = sm.pack_inputs([avg_pool_gradient(get_layer(source, n)) for n in sets.candidates],
                                width)
      if s.standardize_inputs:
        x = sm.standardize(x, xmask)
      x = jax.lax.stop_gradient(x)
      noise = sm.gumbel_noise(rng, (num_cand, 2))
      r_st, p_on = sm.sample(state['samplers'], x, noise, s.temperature)
      r = jax.lax.stop_gradient(r_st)
    elif s.strategy == 'random':
      r = self._random_mask(state['random_key'], ctx.step, num_cand)
      upcoming = self._random_mask(state['random_key'], ctx.step + 1, num_cand)
      next_guess = self._bucket_needed(sets, self._full_mask(sets, upcoming))[1]
    else:
      fixed = set(self.fixed_active_layers(sets))
      r = jnp.asarray([1.0 if n in fixed else 0.0 for n in sets.candidates], jnp.float32)
    if s.strategy == 'all':
      full_mask = jnp.ones((len(sets.names),), jnp.float32)
    else:
      full_mask = self._full_mask(sets, r)
    if s.exact_steps > 0:  # every layer in the first steps' estimates (config.famus.exact_steps)
      full_mask = jnp.where(ctx.step < s.exact_steps, jnp.ones_like(full_mask), full_mask)
    return ActiveSet(r, full_mask, x, noise, p_on, next_guess)

  def layerwise_estimate(self, ctx, w_hat, full_mask, pullback, sets,
                         space=PER_EXAMPLE) -> LayerwiseEstimate:
    """Phase 3: v on the layers >= this variant's floor, the masked JVP (Eq. 9)."""
    floor = sets.bucket_floors[0 if self.bucket is None else self.bucket]
    above = sets.names[floor:]
    if ctx.val_outputs_fn is not None:
      (val_loss, val_aux), val_grad = layerwise.restricted_value_and_grad_aux(
          ctx.val_outputs_fn, w_hat, above)
    else:
      val_loss, val_grad = mg.restricted_value_and_grad(ctx.val_loss_fn, w_hat, above)
      val_aux = None
    layer_mask = {n: full_mask[floor + i] for i, n in enumerate(above)}
    tangent = layerwise.masked_tangent(val_grad, layer_mask)
    d_eps = -ctx.lr * layerwise.directional(ctx, tangent, self.settings.jvp, space)
    g_hat = pullback(d_eps) if pullback is not None else d_eps
    return LayerwiseEstimate(val_loss, val_aux, val_grad, d_eps, g_hat,
                             jnp.sqrt(_tree_vdot(g_hat, g_hat)))

  def gradient_matching(self, ctx, estimate: LayerwiseEstimate, eps, pullback,
                        space=PER_EXAMPLE):
    """Phase 4: (L_g, d_eps + lambda2 dL_g/d eps), the meta model's update direction.

    L_g is closed form at the head (`objective.py`), of the virtual step's logit
    cotangent K(eps) (eps_i e_i, or MLC's c itself); with L2R (no pullback) it
    is only reported and the direction is d_eps.
    """
    s = self.settings
    if estimate.val_aux is not None:
      lg_kwargs = dict(val_features=jax.lax.stop_gradient(estimate.val_aux['features']),
                       val_labels=estimate.val_aux['labels'])
    else:
      lg_kwargs = dict(val_head_grad=mg.unflat_params(estimate.val_grad)['head'])
    ones = jnp.ones(ctx.losses.shape, ctx.losses.dtype)
    # The head's gradient H^T K(e) is head_gradient(H, K(e), 1).
    lg_fn = lambda e: objective.gradient_matching_loss(  # pylint: disable=g-long-lambda
        ones, ctx.features, space.cotangent(ctx, e), ctx.params['head'], ctx.lr, s.lg_form,
        **lg_kwargs)
    if pullback is not None and eps is not None:
      l_g, dlg_deps = jax.value_and_grad(lg_fn)(eps)
      return l_g, estimate.d_eps + s.lambda_g * dlg_deps
    n = ctx.losses.shape[0]
    return lg_fn(jnp.full((n,), 1.0 / n, ctx.losses.dtype)), estimate.d_eps

  def lc_signal(self, ctx, active: ActiveSet, estimate: LayerwiseEstimate, pullback, sets,
                space=PER_EXAMPLE):
    """dL_c~/dr_l on the active candidates (module docstring): one restricted VJP."""
    s = self.settings
    g_hat = jax.lax.stop_gradient(estimate.g_hat)
    scale = s.lc_weight / (estimate.g_norm ** 2 + _TINY) if s.lc_normalize else s.lc_weight
    cot = jax.grad(lambda d: -scale * _tree_vdot(
        g_hat, pullback(d) if pullback is not None else d))(estimate.d_eps)
    # One VJP of the step's linearisation; XLA prunes it below the floor.
    back = mg.flat_params(space.vjp(ctx)(cot))
    per_layer = {}
    for k, v in estimate.val_grad.items():
      per_layer[mg.layer_of(k)] = per_layer.get(mg.layer_of(k), 0.0) + jnp.vdot(back[k], v)
    dm = jnp.stack([(-ctx.lr * per_layer[n]) if n in per_layer else jnp.zeros(())
                    for n in sets.candidates])
    return jax.lax.stop_gradient(dm * active.r)

  def update_samplers(self, ctx, state, active: ActiveSet, estimate: LayerwiseEstimate,
                      pullback, sets, space=PER_EXAMPLE):
    """Phase 5: SGD on L^val = L_c~ + lambda1 L_r (Eq. 12) for the learned strategy.

    Returns (new state without the EMAs, metrics); the counters are updated
    for every strategy.
    """
    s = self.settings
    new_state, metrics = dict(state), {}
    if s.strategy == 'learned':
      if s.lc_weight > 0:
        dr_lc = self.lc_signal(ctx, active, estimate, pullback, sets, space)
      else:  # L_r only (the reference code's effective objective): no extra VJP
        dr_lc = jnp.zeros_like(active.r)

      def sampler_objective(params):
        r_s, _ = sm.sample(params, active.sampler_x, active.noise, s.temperature)
        return jnp.vdot(dr_lc, r_s) + s.lambda_r * objective.selection_loss(
            jnp.sum(r_s), s.target_active)

      grads = jax.grad(sampler_objective)(state['samplers'])
      updates, opt_state = self.tx.update(grads, state['sampler_opt'], state['samplers'])
      new_state['samplers'] = optax.apply_updates(state['samplers'], updates)
      new_state['sampler_opt'] = opt_state
      metrics['famus_p_on'] = active.p_on
      metrics['famus_sampler_grad_norm'] = optax.tree.norm(grads)
      metrics['famus_lc_signal'] = dr_lc
    new_state['active_counts'] = state['active_counts'] + active.r
    new_state['num_steps'] = state['num_steps'] + 1
    return new_state, metrics

  def diagnose(self, ctx, w_hat, diag, estimate: LayerwiseEstimate, pullback,
               space=PER_EXAMPLE):
    """(new diag state, metrics): the estimate against the exact meta gradient, same batch.

    Computed in the diagnostics variant only; other variants carry the last
    values forward (reported every step as one-element arrays).
    """
    s = self.settings
    if self.diagnostics:
      g_hat, g_norm, d_eps = estimate.g_hat, estimate.g_norm, estimate.d_eps
      exact_grad = jax.grad(ctx.val_loss_fn)(w_hat)
      d_exact = -ctx.lr * space.jvp(ctx)(exact_grad)
      g_exact = pullback(d_exact) if pullback is not None else d_exact
      e_norm = jnp.sqrt(_tree_vdot(g_exact, g_exact))
      diff = jax.tree.map(jnp.subtract, g_hat, g_exact)
      diag = {
          'cosine': _tree_vdot(g_hat, g_exact) / jnp.maximum(g_norm * e_norm, _TINY),
          'rel_err': jnp.sqrt(_tree_vdot(diff, diff)) / jnp.maximum(e_norm, _TINY),
          'eps_cosine': jnp.vdot(d_eps, d_exact) / jnp.maximum(
              jnp.linalg.norm(d_eps) * jnp.linalg.norm(d_exact), _TINY),
          'step': ctx.step.astype(jnp.int32),
          'estimate': _ema_update(diag['estimate'], g_norm, s.variance_decay),
          'exact': _ema_update(diag['exact'], e_norm, s.variance_decay),
      }
    metrics = {f'famus_diag_{key}': diag[key][None]
               for key in ('cosine', 'rel_err', 'eps_cosine', 'step')}
    metrics['famus_diag_estimate_norm_std'] = _ema_std(diag['estimate'])[None]
    metrics['famus_diag_exact_norm_std'] = _ema_std(diag['exact'])[None]
    return diag, metrics
