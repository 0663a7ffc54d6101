"""MixUp (Zhang et al. 2018): one draw of the coefficients and partners, and the mixing.

  x~_i = lam_i x_i + (1 - lam_i) x_perm(i), the same for targets and soft labels.

`draw` takes lam ~ Beta(alpha, alpha), one per batch or one per example, optionally
lam = max(lam, 1 - lam) so that every mixed row is dominated by its own example (MixMatch
Eq. 8-9), and a random partner permutation; `mix_rows` mixes the rows of any array with
that draw. FSR (`famus_jax.fsr.method`) mixes its training batch with it; DivideMix's
semi-supervised step (`famus_jax.cotrain.mixmatch.mixup_batch`) its concatenated labelled
and unlabelled batches. The key is split once, into the lam key then the permutation key.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class MixUp(NamedTuple):
  """One batch's MixUp draw: x~_i = lam_i x_i + (1 - lam_i) x_perm(i)."""
  lam: jnp.ndarray              # () one per batch, or (n,) one per example
  perm: jnp.ndarray             # (n,) int32 partner of each row


def draw(rng, n: int, alpha, per_example: bool = False, dominant: bool = True,
         dtype: Optional[jnp.dtype] = None) -> MixUp:
  """lam ~ Beta(alpha, alpha) (shape (n,) when `per_example`, else ()) and a permutation of n.

  dominant: lam = max(lam, 1 - lam). dtype: lam's dtype (None: Beta's default float).
  """
  lam_rng, perm_rng = jax.random.split(rng)
  lam = jax.random.beta(lam_rng, alpha, alpha, (n,) if per_example else None)
  if dtype is not None:
    lam = lam.astype(dtype)
  if dominant:
    lam = jnp.maximum(lam, 1 - lam)
  return MixUp(lam, jax.random.permutation(perm_rng, n).astype(jnp.int32))


def per_row(lam: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """lam shaped to multiply the rows of x: () as is, (n,) as (n, 1, ..., 1)."""
  return lam if lam.ndim == 0 else lam.reshape(lam.shape + (1,) * (x.ndim - 1))


def mix_rows(x: jnp.ndarray, mix: MixUp) -> jnp.ndarray:
  """(n, ...) lam_i x_i + (1 - lam_i) x_perm(i), for images, targets or soft labels."""
  lam = per_row(mix.lam, x)
  return lam * x + (1 - lam) * x[mix.perm]
