"""The co-trained pair's state and its host-side division (FaMUS supplement Alg. 2, first part).

Two networks A and B train together, without clean data. After every epoch
from `cotrain.warmup_epochs` on, each member's per-example training losses
l_i (eval mode) are split by a two-component Gaussian mixture
(`famus_jax.cotrain.division`): c_i = p(lower-mean component | l_i) is the
clean probability, and

  S_A = {i : c_i^A > tau}   (tau = cotrain.clean_threshold)

is A's pseudo-clean set. S_A is B's meta (validation) set for the next epoch,
and S_B is A's: the meta batches of each member come from the OTHER member's
division, with the training examples' given (noisy) labels. When fewer than
k = cotrain.min_pseudo_clean (0: meta_batch_size) examples pass, the set is
the k examples of highest c_i instead, so a meta batch is never empty.

This module holds what does not need the trainer: the state's structure and
the host-side (numpy) selection. The run that drives it is
`famus_jax.train.cotrain_run.CoTrainedRun`.
"""

from typing import Any, NamedTuple

import flax
import jax.numpy as jnp
import numpy as np

from famus_jax.cotrain.division import (clean_probability, division_stats, fit_two_gaussians,
                                        normalise_losses)

# Values of config.meta_set (famus_jax/config.py).
META_SETS = ('clean', 'pseudo_clean')
# The method that is co-training itself: co-divide + the semi-supervised step, uniform weights.
DIVIDEMIX = 'dividemix'


def co_trained(config) -> bool:
  """Whether a run trains the pair: meta_set='pseudo_clean' or method='dividemix'."""
  return config.meta_set == 'pseudo_clean' or config.method == DIVIDEMIX


def semi_supervised(config) -> bool:
  """Whether the pair's members take the semi-supervised step after the warm-up."""
  return config.method == DIVIDEMIX or (co_trained(config) and config.cotrain.semi_supervised)

PyTree = Any


@flax.struct.dataclass
class PairState:
  """The whole co-trained run as one pytree (one checkpoint; N = training examples).

  a, b: the members' TrainStates (same structure, different init and keys).
  clean_prob_a, clean_prob_b: float32 (N,) c_i of each member's last division
    (fitted on that member's own losses; ones before the first division).
  pseudo_clean_a, pseudo_clean_b: bool (N,) each member's pseudo-clean set S
    (after the top-k fallback); S_a is b's meta set and S_b is a's. All True
    before the first division (unused then: the warm-up step takes no meta batch).
  division_epoch: () int32, the epoch whose end made the division (-1: none yet).
  """
  a: PyTree
  b: PyTree
  clean_prob_a: jnp.ndarray
  clean_prob_b: jnp.ndarray
  pseudo_clean_a: jnp.ndarray
  pseudo_clean_b: jnp.ndarray
  division_epoch: jnp.ndarray

  @property
  def step(self):
    """() int32 finished steps (both members take every step)."""
    return self.a.step


def initial_division(num_train: int):
  """(clean_prob float32 (N,), mask bool (N,)): every example clean, before any division."""
  return np.ones((num_train,), np.float32), np.ones((num_train,), bool)


class MemberDivision(NamedTuple):
  """One member's division at an epoch end (host numpy).

  clean_prob: float64 (N,) c_i; mask: bool (N,) the pseudo-clean set S after
  the top-k fallback; above_threshold: how many had c_i > tau; gmm_means:
  (2,) the mixture's means on the min-max normalised losses, lower first
  (nan when all losses are equal and nothing was fitted); size, precision,
  recall: `division_stats(mask, clean)` with the hidden clean mask
  (diagnostics only).
  """
  clean_prob: np.ndarray
  mask: np.ndarray
  above_threshold: int
  gmm_means: np.ndarray
  size: int
  precision: float
  recall: float

  def event_values(self, prefix: str) -> dict:
    """The member's fields of the `division` event of metrics.jsonl."""
    return {f'{prefix}size': self.size, f'{prefix}above_threshold': self.above_threshold,
            f'{prefix}precision': self.precision, f'{prefix}recall': self.recall,
            f'{prefix}gmm_means': [float(m) for m in self.gmm_means]}


def pseudo_clean_mask(clean_prob: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
  """bool (N,): c_i > threshold, or, when fewer than min_size pass, the min_size highest c_i.

  Ties in c_i at the cut go to the lower index (a stable sort), so the set is
  a deterministic function of c.
  """
  clean_prob = np.asarray(clean_prob, np.float64)
  mask = clean_prob > threshold
  if int(mask.sum()) >= min_size:
    return mask
  return top_k_mask(clean_prob, min_size)


def divide_member(losses: np.ndarray, clean_mask: np.ndarray, cfg, min_size: int
                  ) -> MemberDivision:
  """A member's division from its per-example losses (N,) (module docstring).

  cfg: the `config.cotrain` group (gmm_max_iter, gmm_tol, gmm_reg_covar,
  clean_threshold); clean_mask: bool (N,) the truly clean examples, for the
  diagnostics only.
  """
  clean_prob = clean_probability(losses, cfg.gmm_max_iter, cfg.gmm_tol, cfg.gmm_reg_covar)
  mask = pseudo_clean_mask(clean_prob, cfg.clean_threshold, min_size)
  x = normalise_losses(losses)
  means = np.full((2,), np.nan)
  if x is not None:
    means = np.sort(fit_two_gaussians(x, cfg.gmm_max_iter, cfg.gmm_tol, cfg.gmm_reg_covar).means)
  stats = division_stats(mask, clean_mask)
  return MemberDivision(clean_prob, mask, int(np.sum(clean_prob > cfg.clean_threshold)), means,
                        stats['size'], stats['precision'], stats['recall'])


def top_k_mask(clean_prob: np.ndarray, k: int) -> np.ndarray:
  """bool (N,): the k examples of highest c_i (ties to the lower index, a stable sort)."""
  mask = np.zeros(np.shape(clean_prob), bool)
  mask[np.argsort(-np.asarray(clean_prob, np.float64), kind='stable')[:k]] = True
  return mask


def labelled_mask(clean_prob: np.ndarray, threshold: float, min_size: int,
                  max_size: int) -> np.ndarray:
  """bool (N,) the semi-supervised step's labelled part X from the partner's c.

  X = {i : c_i > threshold} (DivideMix's p_threshold); when fewer than
  min_size (a batch) or more than max_size (N minus an unlabelled batch)
  pass, X is the upper half by c_i instead (the reference code's fallback to
  c_i > median(c), made robust to ties), so X and its complement U are never
  empty.
  """
  mask = np.asarray(clean_prob, np.float64) > threshold
  if min_size <= int(mask.sum()) <= max_size:
    return mask
  return top_k_mask(clean_prob, len(mask) // 2)


def meta_ids(mask: np.ndarray) -> np.ndarray:
  """int64 (|S|,) the sorted training ids of a pseudo-clean set."""
  return np.flatnonzero(np.asarray(mask, bool))
