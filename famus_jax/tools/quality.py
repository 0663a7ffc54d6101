"""Meta-gradient quality along a real training run (FaMUS Fig. 1c, Fig. 4, Table 4 in spirit).

  python -m famus_jax.tools.quality --config=configs/fashion_mnist_short.py \\
      --workdir=runs/quality --config.method=famus --config.famus.candidates=all

Trains FaMUS (`config.method='famus'`, MW-Net base) with the one training
loop (`train_and_evaluate`, so it checkpoints and resumes like any run), with
a `QualityHook` plugged in. Every `config.quality.every` steps, on that
step's batch and state (before the step), the hook computes every layer's share
of the exact meta gradient,

    G_{i,l} = -alpha < grad_{w_hat_l} L^val(w_hat), grad_{w_l} L_i(w) >   (FaMUS Eq. 7, 9)

(one validation backward pass and one JVP per layer), so that the estimate of
a layer set S is sum_{l in S} G_{:,l} and the exact meta gradient sums every
layer. The layer sets compared:

  learned  the candidate layers FaMUS's Gumbel samplers switched on at this
           very step (+ `famus.always_on`);
  random   `famus.num_random` candidate layers drawn uniformly (+ always on);
           `quality.random_draws` draws on the same batch give its variance;
  block    the pre-specified residual block `famus.block` (+ always on);
  head     the classifier head alone: FSR's feature sharing, whose meta step
           only sees the head (FSR paper Sec. 4.2).

Each estimate is compared with the exact one in the space of the MW-Net meta
parameters theta (g = (d eps / d theta)^T dL^val/d eps: what the meta step
applies) and in the per-example space (dL^val/d eps, shape (n,)): cosine
similarity, relative error ||g_hat - g|| / ||g|| and norm ratio ||g_hat|| / ||g||.

Writes, in the workdir, besides the run's own files, `quality.jsonl` (one
line per check and estimator, appended as the run goes; a resumed run drops
the checks past its checkpoint and continues) and
`quality_summary.json` (per estimator: means and standard deviations across
checks, the coefficient of variation of ||g_hat|| across steps, the random
estimator's variance across draws, and the final test accuracy).
`python -m famus_jax.tools.report WORKDIR --out=DIR` draws them.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from jax.flatten_util import ravel_pytree

from famus_jax import cli, config_check
from famus_jax.errors import ConfigError
from famus_jax.provenance import provenance
from famus_jax.famus import layer_sets as ls_lib
from famus_jax.meta import meta_gradient as mg
from famus_jax.train.logbook import read_jsonl, write_json
from famus_jax.train.step import make_context_fn
from famus_jax.train.trainer import Hook, Run, train_and_evaluate

ESTIMATORS = ('learned', 'random', 'block', 'head')
_TINY = 1e-30


def check_quality_config(config) -> None:
  """The quality tool needs FaMUS on the MW-Net base (theta space, learned masks)."""
  if config.method != 'famus':
    raise ConfigError(f"famus_jax.tools.quality needs config.method='famus' (its samplers give the "
                      f"'learned' estimate); got {config.method!r}")
  if config.famus.base != 'mwnet':
    raise ConfigError("famus_jax.tools.quality compares meta gradients of the MW-Net weight net: "
                      f"config.famus.base must be 'mwnet', got {config.famus.base!r}")


def make_probe(run: Run, names):
  """probe(state, batch) -> (G (n, L), T (L, P)): per-layer meta-gradient shares.

  G[:, l] = dL^val/d eps restricted to layer l (FaMUS Eq. 9 with S = {l});
  T[l] = its pullback to the MW-Net parameters theta, flattened (P values).
  Both are linear in the layer's share, so any layer set's estimate is a sum
  of rows / columns. Uses the step's own context (same augmentation and keys).
  """
  cfg = run.config
  context = make_context_fn(run.model, True, run.lr_fn, cfg.augment, run.mean, run.std,
                            run.data.num_classes, cfg.meta_bn_train_mode)
  method = run.method

  def probe(state, batch):
    ctx, _, _ = context(state, batch)
    _, pullback, w_hat, _ = method.virtual_step(ctx, state.method_state['base'])
    flat = mg.flat_params(jax.grad(ctx.val_loss_fn)(w_hat))
    eps_cols, theta_rows = [], []
    for layer in names:
      tangent = mg.unflat_params({k: v if mg.layer_of(k) == layer else jnp.zeros_like(v)
                                  for k, v in flat.items()})
      d_eps = -ctx.lr * ctx.train_jvp(tangent)
      eps_cols.append(d_eps)
      theta_rows.append(ravel_pytree(pullback(d_eps))[0])
    return jnp.stack(eps_cols, axis=1), jnp.stack(theta_rows, axis=0)

  return probe


def compare(estimate: np.ndarray, exact: np.ndarray) -> dict:
  """Cosine, relative error and norm ratio of one estimate against the exact vector."""
  e_norm, x_norm = np.linalg.norm(estimate), np.linalg.norm(exact)
  return {'cosine': float(estimate @ exact / max(e_norm * x_norm, _TINY)),
          'rel_err': float(np.linalg.norm(estimate - exact) / max(x_norm, _TINY)),
          'norm_ratio': float(e_norm / max(x_norm, _TINY)),
          'estimate_norm': float(e_norm), 'exact_norm': float(x_norm)}


def layer_masks(names, sets, famus_cfg, active, rng: np.random.Generator, draws: int) -> dict:
  """{estimator: list of (L,) 0/1 masks over `names`} for one check.

  active: (num candidates,) the samplers' mask at this step (learned).
  """
  always = set(sets.always_on)

  def mask(chosen):
    chosen = set(chosen) | always
    return np.asarray([1.0 if n in chosen else 0.0 for n in names])

  candidates = list(sets.candidates)
  k = min(famus_cfg.num_random, len(candidates))
  return {
      'learned': [mask(n for n, a in zip(candidates, active) if a > 0.5)],
      'random': [mask(rng.choice(candidates, size=k, replace=False)) for _ in range(draws)],
      'block': [mask(ls_lib.block_layers(names, famus_cfg.block))],
      'head': [np.asarray([1.0 if n == names[-1] else 0.0 for n in names])],  # the classifier
  }


def check_records(step: int, g_eps: np.ndarray, g_theta: np.ndarray, masks: dict) -> tuple:
  """(jsonl records, random draw variance) of one check.

  g_eps (n, L), g_theta (L, P); draw variance = mean_r ||g_r - mean g||^2 / ||g||^2.
  """
  exact_eps, exact_theta = g_eps.sum(axis=1), g_theta.sum(axis=0)
  records = []
  for name, ms in masks.items():
    m = ms[0]
    rec = {'step': step, 'estimator': name, 'num_layers': int(m.sum()),
           **compare(m @ g_theta, exact_theta)}
    eps = compare(g_eps @ m, exact_eps)
    rec.update({'eps_cosine': eps['cosine'], 'eps_rel_err': eps['rel_err']})
    records.append(rec)
  draws = np.stack([m @ g_theta for m in masks['random']])
  spread = np.mean(np.sum((draws - draws.mean(0)) ** 2, axis=1))
  return records, float(spread / max(float(exact_theta @ exact_theta), _TINY))


def summarise(records: list, draw_variances: list) -> dict:
  """Per estimator: mean / std across checks, and ||g_hat||'s coefficient of variation."""
  out = {'checks': len({r['step'] for r in records})}
  for name in ESTIMATORS:
    rows = [r for r in records if r['estimator'] == name]
    if not rows:
      continue
    col = lambda key, rows=rows: np.asarray([r[key] for r in rows])  # pylint: disable=g-long-lambda
    norms = col('estimate_norm')
    out[name] = {
        'cosine_mean': float(col('cosine').mean()), 'cosine_std': float(col('cosine').std()),
        'rel_err_mean': float(col('rel_err').mean()), 'rel_err_std': float(col('rel_err').std()),
        'norm_ratio_mean': float(col('norm_ratio').mean()),
        'eps_cosine_mean': float(col('eps_cosine').mean()),
        'eps_cosine_std': float(col('eps_cosine').std()),
        'estimate_norm_cv': float(norms.std() / max(norms.mean(), _TINY)),
        'mean_layers': float(col('num_layers').mean()),
    }
  if records:
    exact = np.asarray([r['exact_norm'] for r in records if r['estimator'] == ESTIMATORS[0]])
    out['exact'] = {'norm_cv': float(exact.std() / max(exact.mean(), _TINY))}
  if draw_variances and 'random' in out:
    out['random']['draw_variance'] = float(np.mean(draw_variances))
  return out


class QualityHook(Hook):
  """Checks the estimators every `config.quality.every` steps inside the training loop."""

  def __init__(self, config, workdir: str):
    self.config, self.path = config, os.path.join(workdir, 'quality.jsonl')
    self.summary_path = os.path.join(workdir, 'quality_summary.json')
    self.records, self.draw_variances, self.pending = [], [], None
    self.summary = None
    self.names = self.sets = self.probe = None

  def on_start(self, run, state, start_step):
    del state
    self.sets = run.method.estimator.cached_layer_sets
    self.names = list(self.sets.names)  # forward order, head last
    self.probe = jax.jit(make_probe(run, self.names))
    kept = []
    if start_step and os.path.exists(self.path):
      kept = [r for r in read_jsonl(self.path) if r['step'] < start_step]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    self.records = kept
    self.draw_variances = [r['draw_variance'] for r in kept
                           if r['estimator'] == 'random' and 'draw_variance' in r]

  def before_step(self, run, step, state, batch):
    del run
    if step % self.config.quality.every == 0:
      self.pending = jax.device_get(self.probe(state, batch))

  def after_step(self, run, step, result):
    del run
    if self.pending is None:
      return
    g_eps, g_theta = (np.asarray(a, np.float64) for a in self.pending)
    self.pending = None
    rng = np.random.default_rng([self.config.seed, step])
    active = np.asarray(jax.device_get(result.output.metrics['famus_active']))
    masks = layer_masks(self.names, self.sets, self.config.famus, active, rng,
                        self.config.quality.random_draws)
    new, spread = check_records(step, g_eps, g_theta, masks)
    for r in new:
      if r['estimator'] == 'random':
        r['draw_variance'] = spread
    self.records += new
    self.draw_variances.append(spread)
    with open(self.path, 'a') as f:
      f.writelines(json.dumps(r) + '\n' for r in new)

  def on_end(self, run, state, summary):
    del run, state
    out = summarise(self.records, self.draw_variances)
    out.update({'layers': self.names, 'candidates': list(self.sets.candidates),
                'always_on': list(self.sets.always_on), 'steps': summary['steps'],
                'test_accuracy': summary['last_test_accuracy'],
                'test_loss': summary['last_test_loss'], 'provenance': provenance()})
    write_json(self.summary_path, out)
    self.summary = out


def run_quality(config, workdir: str) -> dict:
  """Train with FaMUS and check the estimators every `config.quality.every` steps."""
  check_quality_config(config)
  config_check.validate(config)
  hook = QualityHook(config, workdir)
  train_and_evaluate(config, workdir, hooks=[hook])
  if hook.summary is None:  # the run had already finished: nothing was checked anew
    with open(hook.summary_path) as f:
      return json.load(f)
  return hook.summary


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    cli.check_workdir(flags.FLAGS.workdir)
    summary = run_quality(flags.FLAGS.config, flags.FLAGS.workdir)
  except cli.USER_ERRORS as e:  # as famus-train: one line saying what is wrong
    sys.exit(f'error ({type(e).__name__}): {e}')
  print(f'{summary["checks"]} checks; test accuracy {summary["test_accuracy"]:.4f}')
  print('| estimator | layers | cosine | rel. error | norm ratio |\n|---|---|---|---|---|')
  for name in ESTIMATORS:
    if name in summary:
      s = summary[name]
      print(f'| {name} | {s["mean_layers"]:.1f} | {s["cosine_mean"]:.3f} ± {s["cosine_std"]:.3f} '
            f'| {s["rel_err_mean"]:.3f} | {s["norm_ratio_mean"]:.3f} |')


if __name__ == '__main__':
  cli.run_app(main, workdir_default='runs/quality')
