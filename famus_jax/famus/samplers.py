"""FaMUS gradient samplers, all L of them evaluated as one batched MLP.

One sampler per candidate layer l (FaMUS Eq. 8): input g_bar_l = Avg-Pool of
layer l's weighted training gradient (`models.avg_pool_gradient`, length D_l),
an MLP with hidden size H (128) and PReLU, then a Gumbel-softmax over
{off, on} with a hard (one-hot) sample and a straight-through gradient.

Batched layout. The L inputs have different lengths D_l; they are zero-padded
to D = max_l D_l and stacked into x (L, D) with a validity mask (L, D). Each
sampler's weights are one slice of stacked arrays, e.g. the first layer is
w0 (L, D, H): padded input positions multiply zeros, so their weights get no
gradient and every slice behaves exactly like a separate MLP of input size
D_l. One einsum per MLP layer replaces L tiny matmuls. Measured (XLA:CPU, 63
samplers as for every layer of a ResNet-32, forward + gradient): batched
0.4 s to compile, 1.9 ms to run; a Python loop of 63 MLPs 8.5 s and 14 ms.

Options: `depth` linear layers (2 = the paper, 3 = the reference code),
`standardize` ((x - mean) / (std + 1e-9) over the valid entries of each layer's
input, as in the reference code; without it the raw gradient averages, often
~1e-4, are too small for the MLP to tell layers apart) and the Gumbel
temperature (5 in the reference code). The hard sample is
argmax(logits + gumbel noise), independent of the temperature; the temperature
only scales the straight-through gradient.

Initialisation: PyTorch-style uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
fan_in = D_l for the first layer, PReLU slope 0.25; the output bias starts at
(0, logit(p0)) so that every sampler is on with probability p0 =
min(K / L, 0.5) before learning (a prior matching the L_r target instead of
all layers on with probability 1/2).
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

STD_EPS = 1e-9


def pack_inputs(vectors: Sequence[jnp.ndarray], width: int):
  """[(D_l,)] -> (x (L, width), mask (L, width)) zero-padded."""
  rows, masks = [], []
  for v in vectors:
    v = jnp.ravel(v).astype(jnp.float32)
    pad = width - v.shape[0]
    rows.append(jnp.pad(v, (0, pad)))
    masks.append(np.arange(width) < v.shape[0])
  return jnp.stack(rows), jnp.asarray(np.stack(masks))


def standardize(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Per row: (x - mean) / (std + 1e-9) over the valid entries; padding stays 0."""
  count = jnp.sum(mask, axis=1, keepdims=True)
  mean = jnp.sum(jnp.where(mask, x, 0.0), axis=1, keepdims=True) / count
  var = jnp.sum(jnp.where(mask, (x - mean) ** 2, 0.0), axis=1, keepdims=True) / count
  return jnp.where(mask, (x - mean) / (jnp.sqrt(var) + STD_EPS), 0.0)


def init_samplers(rng, sizes: Sequence[int], hidden: int, depth: int, p_on: float) -> dict:
  """Stacked parameters of len(sizes) samplers with input sizes D_l."""
  num, width = len(sizes), max(sizes)
  dims = [width] + [hidden] * (depth - 1) + [2]
  keys = jax.random.split(rng, 2 * depth)
  params = {}
  for d in range(depth):
    fan_in = np.asarray(sizes, np.float32) if d == 0 else np.full(num, dims[d], np.float32)
    bound = jnp.asarray(1.0 / np.sqrt(fan_in))
    w = jax.random.uniform(keys[2 * d], (num, dims[d], dims[d + 1]), minval=-1.0, maxval=1.0)
    b = jax.random.uniform(keys[2 * d + 1], (num, dims[d + 1]), minval=-1.0, maxval=1.0)
    w = w * bound[:, None, None]
    if d == 0:
      valid = np.arange(width)[None, :] < np.asarray(sizes)[:, None]
      w = w * jnp.asarray(valid, jnp.float32)[:, :, None]
    params[f'w{d}'] = w
    params[f'b{d}'] = b * bound[:, None]
    if d < depth - 1:
      params[f'a{d}'] = jnp.full((num,), 0.25, jnp.float32)
  p_on = min(max(p_on, 1e-3), 0.5)
  params[f'b{depth - 1}'] = jnp.tile(jnp.asarray([[0.0, math.log(p_on / (1 - p_on))]],
                                                 jnp.float32), (num, 1))
  return params


def sampler_depth(params: dict) -> int:
  return sum(1 for k in params if k.startswith('w'))


def sampler_logits(params: dict, x: jnp.ndarray) -> jnp.ndarray:
  """x (L, D) -> (L, 2) logits of {off, on}, every sampler on its own row."""
  depth = sampler_depth(params)
  h = x
  for d in range(depth):
    h = jnp.einsum('ld,ldh->lh', h, params[f'w{d}']) + params[f'b{d}']
    if d < depth - 1:
      a = params[f'a{d}'][:, None]
      h = jnp.where(h >= 0, h, a * h)
  return h


def gumbel_noise(rng, shape) -> jnp.ndarray:
  return jax.random.gumbel(rng, shape, jnp.float32)


def sample(params: dict, x: jnp.ndarray, noise: jnp.ndarray, temperature: float):
  """Straight-through Gumbel-softmax sample.

  Returns (r (L,), p_on (L,)): r is exactly 0 or 1 in value (the hard sample
  argmax(logits + noise)); its gradient is that of the soft sample
  softmax((logits + noise) / temperature)[:, 1]. p_on = softmax(logits)[:, 1]
  is the sampler's probability of 'on' (no noise), for diagnostics.
  """
  logits = sampler_logits(params, x)
  soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(logits + noise, axis=-1), 2, dtype=soft.dtype)
  straight = hard + (soft - jax.lax.stop_gradient(soft))  # exactly `hard` in value
  return straight[:, 1], jax.nn.softmax(logits, axis=-1)[:, 1]
