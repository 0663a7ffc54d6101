"""The PyTorch peer computes what famus_jax computes (float64, a small ResNet).

Our ResNet-8 (option A, 8x8 images, batch 8, meta batch 8) with random parameters is loaded
into the peer's torch network; BatchNorm is in training mode on both sides and there is no
augmentation (our model is applied directly, not through the train step). Compared, each to
a relative error below 1e-8: the forward pass, the plain step's loss, gradient and updated
parameters, MW-Net's meta gradient (the weight net's gradient after the virtual step, before
its update) and the whole MW-Net step, L2R's dL^val/d eps, FaMUS's gated meta gradient with
fixed gates, and FSR's head look-ahead gradient and weights. The peer differentiates through
its virtual step (create_graph=True); our side uses the production identity
dL^val/d eps_i = -alpha < grad L^val(w_hat), grad L_i(w) > (one JVP). The check with
unnormalised eps makes sure the comparison can fail.

Our side compiles three programs only (XLA:CPU compiles float64 convolutions slowly): the
forward pass, the gradient of a weighted loss sum_i c_i L_i (training and meta batches have
the same shape, so the meta loss's gradient is the same program with c = 1/m), and the JVP.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

torch = pytest.importorskip('torch')

# pylint: disable=wrong-import-position,redefined-outer-name
from famus_jax.fsr import head as head_lib
from famus_jax.meta import meta_gradient as mg
from famus_jax.methods.bases import MWNetBase
from famus_jax.models import ResNetCifar
from famus_jax.tools import torch_peer as tp
from famus_jax.tools import torch_peer_nets as tn
from famus_jax.train.state import create_optimizer
from famus_jax.train.step import cross_entropy

N = M = 8    # equal, so that the training and meta batches share compiled programs
C, SIZE, LR, TOL = 10, 8, 0.1, 1e-8


def rel_err(a, b):
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def tree_rel_err(a, b):
  """Relative error over all leaves; the two trees must have the same keys."""
  a, b = jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return rel_err(np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]),
                 np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)]))


@pytest.fixture(scope='module')
def x64():
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)


class Ours:
  """Our ResNet-8, its variables and the three compiled functions of the module docstring."""

  def __init__(self, rng):
    self.model = model = ResNetCifar(C, depth=8)
    # Shapes only (compiling model.init costs seconds); He-scaled random kernels, BatchNorm
    # scales / biases and statistics away from 1 / 0 so that none of them is trivial.
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(1), x, train=False),
                            jnp.zeros((2, SIZE, SIZE, 3), jnp.float32))

    def draw(path, leaf):
      name, shape = path[-1].key, leaf.shape
      if name == 'kernel':
        return jnp.asarray(rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1])))
      if name in ('scale', 'var'):
        return jnp.asarray(1.0 + 0.1 * rng.uniform(-1.0, 1.0, size=shape))
      return jnp.asarray(0.1 * rng.normal(size=shape))   # bias, mean

    self.params = jax.tree_util.tree_map_with_path(draw, shapes['params'])
    self.stats = jax.tree_util.tree_map_with_path(draw, shapes['batch_stats'])
    self.x = jnp.asarray(rng.normal(size=(N, SIZE, SIZE, 3)))
    self.xm = jnp.asarray(rng.normal(size=(M, SIZE, SIZE, 3)))
    self.y = jnp.asarray(rng.integers(0, C, N), jnp.int32)
    self.ym = jnp.asarray(rng.integers(0, C, M), jnp.int32)
    self.outputs = jax.jit(self._outputs)
    self.weighted_grad = jax.jit(jax.grad(self._weighted_loss))
    self.jvp = jax.jit(lambda p, tangent: mg.coefficient_gradient(
        lambda q: cross_entropy(self._outputs(q, self.x)[0], self.y), p, tangent, LR))

  def _outputs(self, params, x):
    """(logits, features) in training mode (batch statistics), as the peer."""
    out, _ = self.model.apply({'params': params, 'batch_stats': self.stats}, x, train=True,
                              return_features=True, mutable=['batch_stats'])
    return out

  def _weighted_loss(self, params, x, y, c):
    return jnp.sum(c * cross_entropy(self._outputs(params, x)[0], y))

  def losses(self, params):
    return cross_entropy(self.outputs(params, self.x)[0], self.y)

  def train_grad(self, params, eps):
    """grad_w sum_i eps_i L_i(w)."""
    return self.weighted_grad(params, self.x, self.y, eps)

  def val_loss_and_grad(self, params):
    """(L^val(w), grad_w L^val(w)), L^val the mean meta-batch loss."""
    loss = jnp.mean(cross_entropy(self.outputs(params, self.xm)[0], self.ym))
    return loss, self.weighted_grad(params, self.xm, self.ym, jnp.full((M,), 1.0 / M))

  def d_eps(self, params, val_grad, layers=None):
    """dL^val/d eps_i = -alpha < v, grad L_i > with v zero outside `layers` (None: all)."""
    flat = mg.flat_params(val_grad)
    tangent = {k: (v if layers is None or mg.layer_of(k) in layers else jnp.zeros_like(v))
               for k, v in flat.items()}
    return self.jvp(params, tangent)


@pytest.fixture(scope='module')
def ours(x64):  # pylint: disable=unused-argument
  return Ours(np.random.default_rng(0))


@pytest.fixture(scope='module')
def batch(ours):
  torch.set_num_threads(1)
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))
  label = lambda a: torch.from_numpy(np.asarray(a).astype(np.int64))
  return tp.Batch(nchw(ours.x), label(ours.y), nchw(ours.xm), label(ours.ym))


def torch_net(ours):
  net = tn.ResNetCifar(C, depth=8).double().train()
  tn.load_flax_params(net, ours.params, ours.stats)
  return net


class MWNet:
  """Our MW-Net base (weight net, its optimiser) with its small pieces compiled."""

  def __init__(self):
    cfg = ml_collections.ConfigDict(dict(hidden=tn.META_HIDDEN, lr=tp.META_LR,
                                         momentum=tp.META_MOMENTUM,
                                         weight_decay=tp.META_WEIGHT_DECAY, normalize=True))
    self.base = base = MWNetBase(cfg)
    theta = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                         base.init(jax.random.PRNGKey(2), 0)['params'])
    self.state = {'params': theta, 'opt_state': base.tx.init(theta)}

    def meta_step(state, losses, d_eps):
      """(dL/dtheta by the pullback of d_eps, eps(theta'), theta')."""
      _, pullback = base.coefficients(state, losses)
      weights, new_state, _ = base.update(state, losses, d_eps, pullback)
      return pullback(d_eps), weights, new_state['params']

    self.eps = jax.jit(lambda state, losses: base.coefficients(state, losses)[0])
    self.meta_step = jax.jit(meta_step)


def torch_vnet(theta):
  vnet = tn.WeightNet(tn.META_HIDDEN).double()
  tn.load_flax_params(vnet, theta)
  return vnet


@jax.jit
def virtual_params(params, grads):
  return mg.sgd_virtual_params(params, grads, LR)


@jax.jit
def sgd_update(params, grads):
  """Our optimiser (`create_optimizer`), one step from a fresh state."""
  config = ml_collections.ConfigDict({'optimizer': dict(
      momentum=tp.MOMENTUM, nesterov=False, weight_decay=tp.WEIGHT_DECAY)})
  tx = create_optimizer(config, LR)
  updates, _ = tx.update(grads, tx.init(params), params)
  return optax.apply_updates(params, updates)


def named(module):
  return tn.to_flax_tree(module, dict(module.named_parameters()))


def test_layout_round_trip_and_forward(ours, batch):
  net = torch_net(ours)
  assert tree_rel_err(named(net), ours.params) == 0.0
  with torch.no_grad():
    logits, features = net(batch.images)
  our_logits, our_features = ours.outputs(ours.params, ours.x)
  assert rel_err(logits.numpy(), our_logits) < TOL
  assert rel_err(features.numpy(), our_features) < TOL
  with pytest.raises(KeyError, match='not set'):
    tn.load_flax_params(tn.ResNetCifar(C, depth=8).double(), ours.params)


def test_plain_step_loss_gradient_and_update(ours, batch):
  net = torch_net(ours)
  state = tp.make_state(net, 'erm', lr=LR)
  loss = tp.erm_step(state, batch)
  grads = tn.to_flax_tree(net, {k: p.grad for k, p in net.named_parameters()})
  our_grads = ours.train_grad(ours.params, jnp.full((N,), 1.0 / N))
  assert rel_err(loss.item(), jnp.mean(ours.losses(ours.params))) < TOL
  assert tree_rel_err(grads, our_grads) < TOL
  assert tree_rel_err(named(net), sgd_update(ours.params, our_grads)) < TOL


def test_mwnet_meta_gradient_and_step(ours, batch):
  params = ours.params
  mw = MWNet()
  losses = ours.losses(params)
  eps = mw.eps(mw.state, losses)
  w_hat = virtual_params(params, ours.train_grad(params, eps))
  val_loss, val_grad = ours.val_loss_and_grad(w_hat)
  d_eps = ours.d_eps(params, val_grad)
  our_meta_grad, weights, new_theta = mw.meta_step(mw.state, losses, d_eps)

  net = torch_net(ours)
  vnet = torch_vnet(mw.state['params'])
  meta_grads, meta_loss, peer_eps = tp.mwnet_meta_gradient(net, vnet, batch, LR)
  assert rel_err(peer_eps.numpy(), eps) < TOL
  assert rel_err(meta_loss.item(), val_loss) < TOL
  assert np.abs(np.asarray(our_meta_grad['fc2']['kernel'])).max() > 1e-8
  assert tree_rel_err(tn.to_flax_tree(vnet, meta_grads), our_meta_grad) < TOL
  # It can fail: the same peer with eps = V / n instead of V / sum V is far off.
  wrong, _, _ = tp.mwnet_meta_gradient(net, vnet, batch, LR, normalize=False)
  assert tree_rel_err(tn.to_flax_tree(vnet, wrong), our_meta_grad) > 1e-3

  # The whole step: the meta model's SGD step, then the actual step with eps(theta').
  state = tp.make_state(net, 'erm', lr=LR)
  state.vnet = vnet
  state.vnet_opt = tp.sgd(vnet.parameters(), tp.META_LR, tp.META_MOMENTUM,
                          tp.META_WEIGHT_DECAY)
  tp.mwnet_step(state, batch)
  assert tree_rel_err(named(vnet), new_theta) < TOL
  assert tree_rel_err(named(net), sgd_update(params, ours.train_grad(params, weights))) < TOL


def test_l2r_eps_gradient(ours, batch):
  _, val_grad = ours.val_loss_and_grad(ours.params)   # eps = 0: w_hat = w
  peer_d, _ = tp.l2r_eps_gradient(torch_net(ours), batch, LR)
  assert rel_err(peer_d.numpy(), ours.d_eps(ours.params, val_grad)) < TOL
  w = tp.l2r_weights(peer_d).numpy()
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
  assert np.all(w >= 0) and np.any(w > 0)


def test_famus_gated_meta_gradient(ours, batch):
  """Fixed gates: only the 'on' candidate tensors and the head keep the second-order path."""
  net = torch_net(ours)
  candidates = tp.famus_candidates(net)
  assert [c.split('.')[0] for c in candidates] == [
      'stage3_block1_conv1', 'stage3_block1_bn1', 'stage3_block1_bn1',
      'stage3_block1_conv2', 'stage3_block1_bn2', 'stage3_block1_bn2']
  gates = [0, 1, 1, 1, 0, 0]
  on = {'stage3_block1_bn1', 'stage3_block1_conv2', 'head'}
  params = ours.params
  mw = MWNet()
  losses = ours.losses(params)
  eps = mw.eps(mw.state, losses)
  # The virtual step moves every layer; only the second-order path of the 'on' layers counts.
  w_hat = virtual_params(params, ours.train_grad(params, eps))
  _, val_grad = ours.val_loss_and_grad(w_hat)
  our_grad, _, _ = mw.meta_step(mw.state, losses, ours.d_eps(params, val_grad, layers=on))

  vnet = torch_vnet(mw.state['params'])
  samplers = tp.build_samplers(net).double()
  total, _, r = tp.famus_meta_objective(net, vnet, samplers, batch, LR, force_gates=gates)
  theta = dict(vnet.named_parameters())
  peer_grads = torch.autograd.grad(total, list(theta.values()), retain_graph=True)
  assert r.tolist() == gates
  assert tree_rel_err(tn.to_flax_tree(vnet, dict(zip(theta, peer_grads))), our_grad) < TOL
  full, _, _ = tp.mwnet_meta_gradient(net, vnet, batch, LR)   # every layer on
  assert tree_rel_err(tn.to_flax_tree(vnet, full), our_grad) > 1e-6
  # The samplers learn from L_r = (sum r - 4)^2 (and the straight-through gate path).
  sampler_grads = torch.autograd.grad(total, list(samplers.parameters()), allow_unused=True)
  assert any(g is not None and g.abs().max() > 0 for g in sampler_grads)


@pytest.mark.parametrize('soft', [False, True])
def test_fsr_head_look_ahead(ours, batch, soft):
  """The peer's head look-ahead equals our closed form, on hard labels and on soft (MixUp)
  targets, which the peer's one-pass form feeds it."""
  net = torch_net(ours)
  targets = np.random.default_rng(3).dirichlet(np.ones(C), size=N) if soft else None
  w, _, grad_eps, _ = tp.fsr_weights_and_losses(
      net, tp.sgd(net.parameters(), lr=LR), batch,
      targets=None if targets is None else torch.from_numpy(targets))
  logits, features = ours.outputs(ours.params, ours.x)
  _, reward_features = ours.outputs(ours.params, ours.xm)
  hard = jax.nn.one_hot(ours.y, C, dtype=logits.dtype)
  errors = jax.nn.softmax(logits) - (hard if targets is None
                                     else jnp.asarray(targets, logits.dtype))
  direction = head_lib.optimizer_direction(tp.MOMENTUM, False, tp.WEIGHT_DECAY)
  star = head_lib.virtual_head(ours.params['head'], features, errors, jnp.full((N,), 1.0 / N),
                               None, tp.FSR_META_LR, direction)
  reward = head_lib.eps_gradient(star, features, errors, reward_features, ours.ym,
                                 tp.FSR_META_LR, direction)
  assert rel_err(grad_eps.numpy(), reward.grad_eps) < TOL
  assert rel_err(w.numpy(), head_lib.weights_from_gradient(reward.grad_eps, 'noise')) < TOL


@pytest.mark.parametrize('method', tp.METHODS)
def test_every_peer_step_runs(method):
  peer = tp.make_peer('resnet8', 4, 8, method, threads=1)
  assert peer.step() > 0 and np.isfinite(peer.last_loss)
  assert peer.describe()['method'] == method
