"""A PyTorch peer of famus_jax's training steps, computed the way the reference code does.

The benchmark compares our steps with what a user would otherwise run: the public PyTorch
code of MW-Net (Shu et al. 2019), L2R (Ren et al. 2018), FaMUS (Xu et al. 2021) and FSR
(Zhang & Pfister 2021). This module rebuilds those steps in PyTorch on the same networks,
batch and image size, with the same optimiser, so that the step times are like for like
and `tests/test_torch_peer.py` can check, in float64, that the peer computes the same
numbers as famus_jax. torch is imported at the top: import this module only when the
peer is requested (`pip install -e ".[peers]"`).

Networks: `famus_jax/tools/torch_peer_nets.py` (the same layer names, so that
`load_flax_params` maps a famus_jax params tree onto them), FaMUS's gate samplers included.

Settings: the schema's defaults (`SETTINGS`: `famus_jax.config.get_config()` with the reference
code's FSR noise setting, `PEER_OVERRIDES`); the numbers below are those defaults.

Optimiser (as `famus_jax.train.state.create_optimizer`): SGD, momentum 0.9, weight decay
added to the gradient (torch.optim.SGD's `weight_decay`, the same as optax's
`add_decayed_weights` before `sgd`), lr alpha (0.1, constant). The meta model: SGD,
lr 1e-3, momentum 0.9, weight decay 1e-4 (our `config.mwnet`).

Steps (n training examples x_i with losses L_i(w), m meta examples; one call = one step):
  `erm_step`    L = mean_i L_i(w); backward; SGD step.
  `mwnet_step`  V_i = Psi(L_i; theta), eps_i = V_i / sum_k V_k; g = grad_w sum_i eps_i L_i
                with create_graph=True; w_hat = w - alpha g (torch.func.functional_call);
                L^val(w_hat) backward into theta only; meta-model SGD step; then a fresh
                forward / backward of sum_i eps_i(theta') L_i(w) (eps' detached) and the
                real SGD step (the official MW-Net code's structure).
  `l2r_step`    the same with eps = 0 (a leaf requiring grad): w = max(-dL^val/d eps, 0),
                w / sum w (uniform when every weight is clipped, our `l2r.zero_sum`).
  `famus_step`  MW-Net with the reference code's gating: only the candidate tensors (the
                last stage's and `final_bn`'s parameters, each tensor its own "layer") and
                the head keep the second-order path; every other tensor's virtual-step
                gradient is `g.detach()`. Per candidate tensor a sampler (input: the
                per-output-channel sum of its virtual gradient, standardised
                (x - mean) / (std + 1e-9); Linear(D, 128) - PReLU - Linear(128, 128) - PReLU
                - Linear(128, 2); hard Gumbel-softmax with temperature 5, straight-through)
                gives r in {0, 1}; the gradient used is r g when r = 1 and (1 - r) g.detach()
                when r = 0 (a Python branch, as the reference: an off tensor's second-order
                work is skipped). Meta objective L^val + 0.1 (sum r - 4)^2, backward into
                the meta model and the samplers, SGD steps on both (samplers: lr 0.1,
                momentum 0.9), then the actual step as MW-Net.
  `fsr_step`    one forward of the training batch; head-only look-ahead from eps = 1/n:
                theta* = theta - 0.1 (grad_head sum_i eps_i L_i + wd theta + 0.9 trace),
                trace = the real optimiser's momentum buffer of the head; the reward (meta)
                batch's head inputs (no grad) give L_R(theta*); w = max(-dL_R/d eps, 0),
                w / (sum w + 1e-5); the weighted loss sum_i w_i L_i backward on the *same*
                forward outputs; SGD step (the reference code's one-pass form). As the
                reference's noise setting, the one forward is on MixUp images (per example
                lam_i ~ Beta(0.5, 0.5), lam_i = max(lam_i, 1 - lam_i), random partners; L_i
                the soft CE to the mixed one-hot targets) and the loss adds 2 x the mean CE
                to softmax of the RMS-normalised per-example logit EMA (a table over the
                batch's examples, u <- 0.1 rms(u) + 0.9 z after the step).

`make_peer(model_name, batch_size, image_size, method, threads)` builds one of these on
fixed random CIFAR-shaped data for timing: `.step()` runs a step and synchronises. Alone:
`python -m famus_jax.tools.torch_peer --model=resnet32 --methods=erm,mwnet --steps=5`
(`__main__.py`).
"""

import dataclasses
import math
import time
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from famus_jax import catalogue
from famus_jax import config as base_config
from famus_jax.fsr.head import NORM_EPS as FSR_NORM_EPS
from famus_jax.tools.torch_peer_nets import (WeightNet, build_samplers, channel_sums,
                                             create_model, famus_candidates)

# The settings the peer computes with: the schema's defaults (famus_jax/config.py), with the
# reference code's FSR noise setting where it differs from them.
PEER_OVERRIDES = {'fsr.mixup_alpha': 0.5, 'fsr.mixup_form': 'one_pass'}


def peer_config():
  """The schema (`famus_jax.config.get_config()`) with `PEER_OVERRIDES`."""
  c = base_config.get_config()
  c.update_from_flattened_dict(PEER_OVERRIDES)
  return c


SETTINGS = peer_config()
LR = SETTINGS.lr.base      # base network, constant schedule
MOMENTUM = SETTINGS.optimizer.momentum
WEIGHT_DECAY = SETTINGS.optimizer.weight_decay
META_LR, META_MOMENTUM = SETTINGS.mwnet.lr, SETTINGS.mwnet.momentum
META_WEIGHT_DECAY = SETTINGS.mwnet.weight_decay
SAMPLER_LR, SAMPLER_MOMENTUM = SETTINGS.famus.sampler_lr, SETTINGS.famus.sampler_momentum
TARGET_ACTIVE, LAMBDA_R = SETTINGS.famus.target_active, SETTINGS.famus.lambda_r
FSR_META_LR = SETTINGS.fsr.meta_lr
FSR_MIXUP_ALPHA = SETTINGS.fsr.mixup_alpha   # per example, max(lam, 1 - lam)
# Re-labeling `all_1_0.1_2` of the reference: weight p and the share of the old logit EMA kept.
FSR_RELABEL_WEIGHT, FSR_RELABEL_KEEP = SETTINGS.fsr.relabel_weight, SETTINGS.fsr.relabel_momentum
# The methods the peer computes: the catalogue's `MethodEntry.peer` names (one step each).
METHODS = catalogue.peer_methods()


# ---- step pieces -------------------------------------------------------------------------
@dataclasses.dataclass
class Batch:
  """images (n, 3, H, W) float, labels (n,) int64; meta_* the meta / reward batch (m, ...)."""
  images: torch.Tensor
  labels: torch.Tensor
  meta_images: Optional[torch.Tensor] = None
  meta_labels: Optional[torch.Tensor] = None


def _params(model: nn.Module) -> dict:
  return dict(model.named_parameters())


def _forward_discarding_stats(model: nn.Module, params: Mapping, images: torch.Tensor):
  """model(images) with `params` in place of its own, BatchNorm in training mode.

  The running statistics are copies, so this pass leaves the model's untouched (the
  virtual and meta forward passes of the reference code run on a throw-away copy).
  """
  buffers = {k: b.clone() for k, b in model.named_buffers()}
  return functional_call(model, ({**params, **buffers},), (images,))


def normalise_by_sum(v: torch.Tensor) -> torch.Tensor:
  """v / sum(v) when the sum is positive, else v (the reference code's `norm_weight`)."""
  total = v.sum()
  return v / torch.where(total > 0, total, torch.ones_like(total))


def sgd(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY) -> torch.optim.SGD:
  """Our optimiser: d = g + wd w; buf = momentum buf + d; w -= lr buf."""
  return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def weighted_virtual_gradient(model: nn.Module, images, labels, weights_fn):
  """The virtual step's inputs: (losses (n,), eps (n,), {name: g}, params).

  eps = weights_fn(losses detached); g = grad_w sum_i eps_i L_i(w) with create_graph=True,
  so that g stays a function of eps (and through it of the meta parameters).
  """
  params = _params(model)
  logits, _ = _forward_discarding_stats(model, params, images)
  losses = F.cross_entropy(logits, labels, reduction='none')
  eps = weights_fn(losses.detach())
  grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
  return losses, eps, dict(zip(params, grads)), params


def meta_loss_at(model: nn.Module, params: Mapping, grads: Mapping, lr, meta_images,
                 meta_labels):
  """L^val(w_hat) = mean_j CE(f(x_j; w - lr g), y_j) with the virtual weights w_hat.

  w enters detached: only the path through g (to eps and the meta parameters) is kept.
  """
  w_hat = {k: p.detach() - lr * grads[k] for k, p in params.items()}
  logits, _ = _forward_discarding_stats(model, w_hat, meta_images)
  return F.cross_entropy(logits, meta_labels)


def mwnet_meta_gradient(model: nn.Module, vnet: nn.Module, batch: Batch, lr,
                        normalize: bool = True):
  """MW-Net's meta gradient before the meta step: ({vnet name: dL^val/dtheta}, L^val, eps).

  eps_i = V_i / sum V (normalize) or V_i / n; w_hat = w - lr grad_w sum_i eps_i L_i;
  the gradient of L^val(w_hat) with respect to theta by reverse-over-reverse autodiff.
  """
  n = batch.labels.shape[0]

  def weights_fn(losses):
    v = vnet(losses)
    return normalise_by_sum(v) if normalize else v / n

  _, eps, grads, params = weighted_virtual_gradient(model, batch.images, batch.labels,
                                                     weights_fn)
  meta_loss = meta_loss_at(model, params, grads, lr, batch.meta_images, batch.meta_labels)
  theta = _params(vnet)
  meta_grads = torch.autograd.grad(meta_loss, list(theta.values()))
  return dict(zip(theta, meta_grads)), meta_loss.detach(), eps.detach()


def l2r_eps_gradient(model: nn.Module, batch: Batch, lr):
  """L2R's dL^val/d eps at eps = 0, (n,), through the (identity-valued) virtual step."""
  n = batch.labels.shape[0]
  eps = torch.zeros(n, dtype=batch.images.dtype, device=batch.images.device,
                    requires_grad=True)
  _, _, grads, params = weighted_virtual_gradient(model, batch.images, batch.labels,
                                                   lambda losses: eps)
  meta_loss = meta_loss_at(model, params, grads, lr, batch.meta_images, batch.meta_labels)
  return torch.autograd.grad(meta_loss, eps)[0], meta_loss.detach()


def l2r_weights(grad_eps: torch.Tensor) -> torch.Tensor:
  """w = max(-grad, 0) / sum; uniform 1/n when every weight is clipped to 0."""
  w = torch.clamp(-grad_eps, min=0.0)
  total = w.sum()
  uniform = torch.full_like(w, 1.0 / w.shape[0])
  return torch.where(total > 0, w / torch.where(total > 0, total, torch.ones_like(total)),
                     uniform)


def _actual_step(model, opt, batch: Batch, weights_fn):
  """A fresh forward / backward of sum_i w_i L_i(w), w = weights_fn(losses) detached."""
  logits, _ = model(batch.images)
  losses = F.cross_entropy(logits, batch.labels, reduction='none')
  with torch.no_grad():
    w = weights_fn(losses.detach())
  loss = (w * losses).sum()
  opt.zero_grad(set_to_none=True)
  loss.backward()
  opt.step()
  return loss.detach()


def _apply(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads) -> None:
  for p, g in zip(params, grads):
    p.grad = None if g is None else g.detach()
  opt.step()


def famus_meta_objective(model, vnet, samplers, batch: Batch, lr,
                         force_gates: Optional[Sequence[float]] = None):
  """(L^val(w_hat) + 0.1 (sum r - 4)^2, L^val, r) with the reference code's gating.

  Head tensors: g; candidate tensor c: r_c g_c if r_c = 1 else (1 - r_c) g_c.detach();
  every other tensor: g.detach(). `force_gates` (one 0 / 1 per candidate, tests) replaces
  the samples' values, keeping their straight-through gradient.
  """
  _, _, grads, params = weighted_virtual_gradient(
      model, batch.images, batch.labels, lambda losses: normalise_by_sum(vnet(losses)))
  candidates = famus_candidates(model)
  gated, gates = {}, []
  for name, g in grads.items():
    if name.startswith('head.'):
      gated[name] = g
    elif name in candidates:
      i = candidates.index(name)
      r = samplers[str(i)](channel_sums(g.detach()))
      if force_gates is not None:
        r = r - r.detach() + float(force_gates[i])
      gates.append(r)
      gated[name] = r * g if r.item() > 0.5 else (1.0 - r) * g.detach()
    else:
      gated[name] = g.detach()
  meta_loss = meta_loss_at(model, params, gated, lr, batch.meta_images, batch.meta_labels)
  count = torch.stack(gates).sum()
  total = meta_loss + LAMBDA_R * (count - TARGET_ACTIVE) ** 2
  return total, meta_loss.detach(), torch.stack(gates).detach()


# ---- FSR head look-ahead -----------------------------------------------------------------
def fsr_weights_and_losses(model: nn.Module, opt: torch.optim.Optimizer, batch: Batch,
                           meta_lr=FSR_META_LR, weight_decay=WEIGHT_DECAY,
                           momentum=MOMENTUM, images=None, targets=None):
  """(w (n,), losses (n,) with their graph, dL_R/d eps (n,), logits): FSR's look-ahead.

  images, targets: the forward's images (default batch.images) and (n, C) soft targets
  (default the one-hot labels); L_i = -sum_c t_ic log softmax(z_i)_c.
  eps = 1/n (leaf); G = grad_head sum_i eps_i L_i (create_graph, from the training
  forward's logits); theta* = theta - meta_lr (G + wd theta + momentum trace), trace the
  optimiser's momentum buffer of the head (0 before the first step); the reward batch's
  head inputs r (no grad, throw-away BatchNorm statistics); L_R = mean_j CE(r_j theta*, y_j);
  w = max(-dL_R/d eps, 0) / (sum + 1e-5).
  """
  logits, _ = model(batch.images if images is None else images)
  if targets is None:
    losses = F.cross_entropy(logits, batch.labels, reduction='none')
  else:
    losses = -(targets * F.log_softmax(logits, dim=-1)).sum(-1)
  n = losses.shape[0]
  eps = torch.full((n,), 1.0 / n, dtype=losses.dtype, device=losses.device,
                   requires_grad=True)
  head = [model.head.weight, model.head.bias]
  grads = torch.autograd.grad((eps * losses).sum(), head, create_graph=True)
  star = []
  for p, g in zip(head, grads):
    trace = opt.state.get(p, {}).get('momentum_buffer')
    d = g + weight_decay * p.detach()
    if trace is not None:
      d = d + momentum * trace
    star.append(p.detach() - meta_lr * d)
  with torch.no_grad():
    _, reward_features = _forward_discarding_stats(model, _params(model), batch.meta_images)
  reward_loss = F.cross_entropy(F.linear(reward_features, star[0], star[1]), batch.meta_labels)
  grad_eps = torch.autograd.grad(reward_loss, eps)[0]
  w = torch.clamp(-grad_eps, min=0.0)
  return w / (w.sum() + FSR_NORM_EPS), losses, grad_eps, logits


# ---- whole steps -------------------------------------------------------------------------
@dataclasses.dataclass
class PeerState:
  """The base network and its optimiser, and the method's own modules and optimisers."""
  model: nn.Module
  opt: torch.optim.Optimizer
  lr: float = LR
  vnet: Optional[nn.Module] = None
  vnet_opt: Optional[torch.optim.Optimizer] = None
  samplers: Optional[nn.Module] = None
  sampler_opt: Optional[torch.optim.Optimizer] = None
  ema_logits: Optional[torch.Tensor] = None    # FSR: (n, C) logit EMA of the batch's examples


def erm_step(s: PeerState, batch: Batch) -> torch.Tensor:
  """Plain step: mean CE, backward, SGD step. Returns the loss."""
  logits, _ = s.model(batch.images)
  loss = F.cross_entropy(logits, batch.labels)
  s.opt.zero_grad(set_to_none=True)
  loss.backward()
  s.opt.step()
  return loss.detach()


def mwnet_step(s: PeerState, batch: Batch) -> torch.Tensor:
  """MW-Net: meta gradient, meta-model step, fresh forward / backward with eps(theta')."""
  meta_grads, _, _ = mwnet_meta_gradient(s.model, s.vnet, batch, s.lr)
  _apply(s.vnet_opt, list(s.vnet.parameters()), meta_grads.values())
  return _actual_step(s.model, s.opt, batch, lambda losses: normalise_by_sum(s.vnet(losses)))


def l2r_step(s: PeerState, batch: Batch) -> torch.Tensor:
  """L2R: dL^val/d eps at eps = 0, clipped and normalised weights, fresh forward / backward."""
  grad_eps, _ = l2r_eps_gradient(s.model, batch, s.lr)
  w = l2r_weights(grad_eps)
  return _actual_step(s.model, s.opt, batch, lambda losses: w)


def famus_step(s: PeerState, batch: Batch) -> torch.Tensor:
  """FaMUS (reference gating + samplers): meta and sampler steps, then MW-Net's actual step."""
  total, _, _ = famus_meta_objective(s.model, s.vnet, s.samplers, batch, s.lr)
  theta, phi = list(s.vnet.parameters()), list(s.samplers.parameters())
  grads = torch.autograd.grad(total, theta + phi, allow_unused=True)
  _apply(s.vnet_opt, theta, grads[:len(theta)])
  _apply(s.sampler_opt, phi, grads[len(theta):])
  return _actual_step(s.model, s.opt, batch, lambda losses: normalise_by_sum(s.vnet(losses)))


def fsr_step(s: PeerState, batch: Batch) -> torch.Tensor:
  """FSR (reference one-pass form): MixUp forward, head look-ahead weights, the weighted loss
  plus re-labeling on the same forward outputs, one backward."""
  x, y = batch.images, batch.labels
  n = x.shape[0]
  lam = torch.distributions.Beta(FSR_MIXUP_ALPHA, FSR_MIXUP_ALPHA).sample((n,)).to(x)
  lam = torch.maximum(lam, 1 - lam)
  perm = torch.randperm(n, device=x.device)
  onehot = F.one_hot(y, s.ema_logits.shape[1]).to(x.dtype)
  mixed = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
  targets = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[perm]
  w, losses, _, logits = fsr_weights_and_losses(s.model, s.opt, batch, images=mixed,
                                                targets=targets)
  with torch.no_grad():
    u = s.ema_logits
    u = u * torch.rsqrt(u.square().mean() + 1e-8)
    pseudo = F.softmax(u, dim=-1)
  relabel = -(pseudo * F.log_softmax(logits, dim=-1)).sum(-1).mean()
  loss = (w.detach() * losses).sum() + FSR_RELABEL_WEIGHT * relabel
  with torch.no_grad():
    s.ema_logits = FSR_RELABEL_KEEP * u + (1 - FSR_RELABEL_KEEP) * logits.detach()
  s.opt.zero_grad(set_to_none=True)
  loss.backward()
  s.opt.step()
  return loss.detach()


STEPS = {'erm': erm_step, 'mwnet': mwnet_step, 'l2r': l2r_step, 'famus': famus_step,
         'fsr': fsr_step}


def make_state(model: nn.Module, method: str, lr: float = LR) -> PeerState:
  """The optimisers (and meta model / samplers) `method` needs, around `model`."""
  if method not in STEPS:
    raise ValueError(f'unknown peer method {method!r}; known: {METHODS}')
  p = next(model.parameters())
  s = PeerState(model=model, opt=sgd(model.parameters(), lr=lr), lr=lr)
  if method in ('mwnet', 'famus'):
    s.vnet = WeightNet().to(device=p.device, dtype=p.dtype)
    s.vnet_opt = sgd(s.vnet.parameters(), META_LR, META_MOMENTUM, META_WEIGHT_DECAY)
  if method == 'famus':
    s.samplers = build_samplers(model).to(device=p.device, dtype=p.dtype)
    s.sampler_opt = torch.optim.SGD(s.samplers.parameters(), lr=SAMPLER_LR,
                                    momentum=SAMPLER_MOMENTUM)
  return s


def init_fsr_table(s: PeerState, num_examples: int, num_classes: int) -> None:
  """FSR's per-example logit EMA (zeros: a uniform first target), as the reference."""
  p = next(s.model.parameters())
  s.ema_logits = torch.zeros(num_examples, num_classes, device=p.device, dtype=p.dtype)


# ---- timing API --------------------------------------------------------------------------
def default_device() -> str:
  return 'cuda' if torch.cuda.is_available() else 'cpu'


class Peer:
  """One method's PyTorch step on fixed random data; `.step()` runs it and synchronises.

  Attributes: model_name, method, batch_size, meta_batch_size, image_size, threads, device
  ('cpu' or 'cuda'), state (PeerState), batch (Batch), last_loss and last_cpu_s (floats,
  after a step).
  """

  def __init__(self, model_name: str, batch_size: int, image_size: int, method: str,
               threads: int, device: Optional[str] = None,
               meta_batch_size: Optional[int] = None, num_classes: int = 10, seed: int = 0,
               dtype: torch.dtype = torch.float32):
    if threads:
      torch.set_num_threads(int(threads))
    self.model_name, self.method = model_name, method
    self.batch_size, self.image_size, self.threads = batch_size, image_size, threads
    self.meta_batch_size = meta_batch_size or batch_size
    self.device = device or default_device()
    torch.manual_seed(seed)
    if self.device.startswith('cuda'):
      torch.backends.cudnn.benchmark = True   # as the reference scripts
    model = create_model(model_name, num_classes).to(device=self.device, dtype=dtype)
    model.train()
    self.state = make_state(model, method)
    gen = torch.Generator().manual_seed(seed)

    def data(n):
      x = torch.randn(n, 3, image_size, image_size, generator=gen, dtype=dtype)
      y = torch.randint(0, num_classes, (n,), generator=gen)
      return x.to(self.device), y.to(self.device)

    self.batch = Batch(*data(batch_size), *data(self.meta_batch_size))
    if method == 'fsr':
      init_fsr_table(self.state, batch_size, num_classes)
    self._fn = STEPS[method]
    self.last_loss = self.last_cpu_s = None

  def synchronize(self) -> None:
    if self.device.startswith('cuda'):
      torch.cuda.synchronize()

  def step(self) -> float:
    """One training step; returns its wall time in seconds (after synchronising).

    Also sets `last_cpu_s`, the process's CPU time during the step (all threads).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    loss = self._fn(self.state, self.batch)
    self.synchronize()
    wall = time.perf_counter() - t0
    self.last_cpu_s = time.process_time() - c0
    self.last_loss = float(loss)
    if not math.isfinite(self.last_loss):
      raise FloatingPointError(f'torch peer {self.method}: non-finite loss')
    return wall

  def describe(self) -> dict:
    """JSON-able facts about the peer (for the benchmark's output)."""
    name = (torch.cuda.get_device_name(0) if self.device.startswith('cuda')
            else 'cpu')
    return {'framework': f'torch {torch.__version__}', 'device': f'{self.device}:{name}',
            'threads': torch.get_num_threads(), 'model': self.model_name,
            'method': self.method, 'batch_size': self.batch_size,
            'meta_batch_size': self.meta_batch_size, 'image_size': self.image_size}


def make_peer(model_name: str, batch_size: int, image_size: int, method: str,
              threads: int, **kwargs) -> Peer:
  """A `Peer` (see its docstring); kwargs: device, meta_batch_size, num_classes, seed, dtype."""
  return Peer(model_name, batch_size, image_size, method, threads, **kwargs)


def cuda_available() -> bool:
  """Whether the peer can run on a CUDA GPU (torch built with CUDA and a device present)."""
  return torch.cuda.is_available()
