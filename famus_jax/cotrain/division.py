"""Co-divide: splitting the training set into pseudo-clean and noisy parts by loss (host side).

DivideMix (Li, Socher & Hoi, ICLR 2020, Sec. 3.1, "co-divide") and FaMUS's
supplement (Algorithm 2) fit, after every epoch and for each of the two
networks, a two-component Gaussian mixture to its per-example training losses
l_i (eval mode), min-max normalised to [0, 1]:

  x_i = (l_i - min_j l_j) / (max_j l_j - min_j l_j)
  p(x) = sum_k w_k N(x; mu_k, s2_k),  k in {0, 1}
  c_i = p(k* | x_i) = w_k* N(x_i; mu_k*, s2_k*) / p(x_i),  k* = argmin_k mu_k

c_i is the clean probability (DivideMix's w_i); the examples with
c_i > tau (tau = 0.5) are that network's labelled set, handed to the OTHER
network.

The mixture is fitted by our own EM, written to follow the semantics of the
reference code's `sklearn.mixture.GaussianMixture(n_components=2,
max_iter=10, tol=1e-2, reg_covar=5e-4)` (one initialisation, 'kmeans' init):

- init: hard responsibilities from a 2-means clustering of x, then one
  M-step with weights n_k / N;
- E-step: log r_ik = log w_k + log N(x_i; mu_k, s2_k) - log p(x_i),
  lower bound L = mean_i log p(x_i) (the mean log-likelihood);
- M-step: n_k = sum_i r_ik + 10 eps, mu_k = sum_i r_ik x_i / n_k,
  s2_k = sum_i r_ik (x_i - mu_k)^2 / n_k + reg_covar, w_k = n_k / sum_k n_k;
- iterate E, M at most max_iter times, stopping (converged) as soon as the
  lower bound of this iteration's E-step changes by less than tol from the
  previous one (the first change is from -inf).

The one deliberate difference is the 2-means: sklearn runs KMeans (random
k-means++ seeding, then Lloyd iterations that may stop at a local optimum or
short of a fixed point), while here 2-means is solved exactly and without any
randomness. In 1-D an optimal 2-means partition is a split of the sorted
values (each point belongs to the nearer of the two centres, and the set of
points nearer to the left centre is an interval), so scanning the N - 1 split
points of the sorted data with prefix sums finds the global optimum in
O(N log N); the fit needs no seed. Where sklearn's KMeans reaches this
partition the two fits agree to rounding (1e-15 in c_i); on overlapping
losses its Lloyd iterations often stop a few points short (their stopping
rule is a centre shift below 1e-4 of the data variance), and with max_iter=10,
tol=1e-2 EM stops after 2-5 iterations, so its c_i then differ from ours by up
to a few 1e-2, as they differ between its own random states; converged fits
agree to 1e-9 (tests/test_cotrain_parts.py).

Everything is float64 numpy on the host; the data are one scalar per example.
(The reference code hands sklearn float32 losses, which it keeps in float32;
from the same start that changes c_i by at most 4e-7 on the test's cases.)
"""

from typing import NamedTuple

import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))
# sklearn adds 10 machine epsilons to every component's soft count (no empty component).
_COUNT_EPS = 10.0 * float(np.finfo(np.float64).eps)


class TwoGaussians(NamedTuple):
  """A fitted two-component 1-D Gaussian mixture.

  Components are ordered as the 2-means initialisation left them: 0 started as
  the lower cluster. `variances` include reg_covar. `lower_bound` is the mean
  log-likelihood of the last E-step (the parameters before the final M-step,
  as sklearn's `lower_bound_`; -inf when max_iter = 0).
  """
  means: np.ndarray      # (2,)
  variances: np.ndarray  # (2,)
  weights: np.ndarray    # (2,)
  n_iter: int
  converged: bool
  lower_bound: float


def two_means_labels(x: np.ndarray) -> np.ndarray:
  """Exact 1-D 2-means: int (N,) labels, 0 for the lower cluster, 1 for the upper.

  Minimises sum_i (x_i - m_{label_i})^2 over all partitions into two non-empty
  clusters by scanning the splits of the sorted values: for the first k sorted
  values on the left the cost is S2_k - S1_k^2 / k plus the same for the rest
  (S1, S2 prefix sums of the centred values). Equal values are never split.
  Ties in cost go to the lowest split. Raises ValueError when x has fewer
  than two distinct values.
  """
  x = np.asarray(x, np.float64).ravel()
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  centred = sorted_x - np.mean(sorted_x)
  n = centred.shape[0]
  s1 = np.cumsum(centred)
  s2 = np.cumsum(centred * centred)
  k = np.arange(1, n)                       # left sizes 1 .. N-1
  left = s2[:-1] - s1[:-1] ** 2 / k
  right_s1 = s1[-1] - s1[:-1]
  right = (s2[-1] - s2[:-1]) - right_s1 ** 2 / (n - k)
  valid = sorted_x[1:] > sorted_x[:-1]      # a split between two distinct values
  if not np.any(valid):
    raise ValueError('2-means needs at least two distinct values')
  cost = np.where(valid, left + right, np.inf)
  split = int(np.argmin(cost)) + 1          # the first `split` sorted values are cluster 0
  labels = np.ones(n, np.int64)
  labels[order[:split]] = 0
  return labels


def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float):
  """(N,), (N, 2) responsibilities -> soft counts n_k, means, variances (each (2,))."""
  counts = np.sum(resp, axis=0) + _COUNT_EPS
  means = resp.T @ x / counts
  diff = x[:, None] - means[None, :]
  variances = np.sum(resp * diff * diff, axis=0) / counts + reg_covar
  return counts, means, variances


def log_responsibilities(x: np.ndarray, means: np.ndarray, variances: np.ndarray,
                         weights: np.ndarray):
  """E-step: (log r (N, 2), mean_i log p(x_i)).

  log r_ik = log w_k + log N(x_i; mu_k, s2_k) - log p(x_i), with
  log N(x; mu, s2) = -(log 2 pi + log s2 + (x - mu)^2 / s2) / 2.
  """
  x = np.asarray(x, np.float64).ravel()
  diff = x[:, None] - means[None, :]
  weighted = (np.log(weights)[None, :]
              - 0.5 * (_LOG_2PI + np.log(variances)[None, :] + diff * diff / variances[None, :]))
  top = np.max(weighted, axis=1, keepdims=True)
  log_norm = top[:, 0] + np.log(np.sum(np.exp(weighted - top), axis=1))
  return weighted - log_norm[:, None], float(np.mean(log_norm))


def fit_two_gaussians(x: np.ndarray, max_iter: int, tol: float, reg_covar: float) -> TwoGaussians:
  """EM for a two-component 1-D Gaussian mixture on x (N,) (module docstring).

  sklearn's GaussianMixture(n_components=2, covariance_type='full', n_init=1,
  init_params='kmeans', max_iter, tol, reg_covar) semantics, with the exact
  2-means of `two_means_labels` as the initial hard assignment; deterministic
  (no seed). Raises ValueError when x has fewer than two distinct values or is
  not finite.
  """
  x = np.asarray(x, np.float64).ravel()
  if not np.all(np.isfinite(x)):
    raise ValueError('fit_two_gaussians: x must be finite')
  labels = two_means_labels(x)
  resp = np.zeros((x.shape[0], 2))
  resp[np.arange(x.shape[0]), labels] = 1.0
  counts, means, variances = _m_step(x, resp, reg_covar)
  weights = counts / x.shape[0]
  lower_bound = -np.inf
  converged = False
  n_iter = 0
  for n_iter in range(1, max_iter + 1):
    previous = lower_bound
    log_resp, lower_bound = log_responsibilities(x, means, variances, weights)
    counts, means, variances = _m_step(x, np.exp(log_resp), reg_covar)
    weights = counts / np.sum(counts)
    if abs(lower_bound - previous) < tol:
      converged = True
      break
  return TwoGaussians(means, variances, weights, n_iter, converged, float(lower_bound))


def normalise_losses(losses: np.ndarray):
  """(l - min l) / (max l - min l) as float64 (N,); None when max l == min l."""
  losses = np.asarray(losses, np.float64).ravel()
  low, high = np.min(losses), np.max(losses)
  if not high > low:
    return None
  return (losses - low) / (high - low)


def clean_probability(losses: np.ndarray, max_iter: int, tol: float,
                      reg_covar: float) -> np.ndarray:
  """c_i, the posterior of the lower-mean component, float64 (N,) (module docstring).

  The losses (N,) are min-max normalised, a two-component mixture is fitted
  by `fit_two_gaussians`, and c_i = p(k* | x_i) under the fitted parameters,
  k* = argmin_k mu_k. Degenerate case: when every loss is equal (N = 1
  included) nothing tells the examples apart and no mixture can be fitted;
  every example is then kept as clean, c_i = 1. Raises ValueError on an empty
  or non-finite input.
  """
  losses = np.asarray(losses, np.float64).ravel()
  if losses.shape[0] == 0 or not np.all(np.isfinite(losses)):
    raise ValueError('clean_probability: losses must be non-empty and finite')
  x = normalise_losses(losses)
  if x is None:
    return np.ones_like(losses)
  mixture = fit_two_gaussians(x, max_iter, tol, reg_covar)
  log_resp, _ = log_responsibilities(x, mixture.means, mixture.variances, mixture.weights)
  return np.exp(log_resp[:, int(np.argmin(mixture.means))])


def divide(clean_prob: np.ndarray, threshold: float) -> np.ndarray:
  """bool (N,): c_i > threshold, the pseudo-clean (labelled) set."""
  return np.asarray(clean_prob) > threshold


def division_stats(mask: np.ndarray, clean_mask: np.ndarray) -> dict:
  """Size, precision and recall of a pseudo-clean set against the hidden clean mask.

  size = |S|, precision = |S & clean| / |S|, recall = |S & clean| / |clean|,
  S the selected examples (mask, bool (N,)); precision is nan when S is empty,
  recall is nan when no example is clean. Diagnostics only (clean labels).
  """
  mask = np.asarray(mask, bool).ravel()
  clean_mask = np.asarray(clean_mask, bool).ravel()
  if mask.shape != clean_mask.shape:
    raise ValueError(f'division_stats: mask {mask.shape} and clean mask {clean_mask.shape}')
  size = int(np.sum(mask))
  hits = int(np.sum(mask & clean_mask))
  clean = int(np.sum(clean_mask))
  return {
      'size': size,
      'precision': hits / size if size else float('nan'),
      'recall': hits / clean if clean else float('nan'),
  }
