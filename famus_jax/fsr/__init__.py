"""FSR: Fast Sample Re-weighting without reward data (Zhang & Pfister, ICCV 2021).

    python main.py --config=configs/cifar10_fsr_noise.py
    python main.py --config=configs/fashion_mnist.py --config.method=fsr --config.num_meta=0

Modules: `head` (closed-form head-only meta step), `dictionary` (the proxy
reward buffer R), `method` (the `Method` plugged into the shared step),
`config` (validation of `config.fsr`); step time and memory vs ERM:
`python -m famus_jax.tools.benchmark --methods=erm,fsr,fsr_onepass`.

Choices, paper vs the public reference code (TensorFlow, google-research/ieg):

- Meta parameters: the classifier head only (paper's default, Sec. 4.2; the
  reference can include more layers). The meta gradient is the closed form
  of `head.py`, exactly equal to autodiff through the head's virtual update
  and to FaMUS's layer-wise identity restricted to 'head' (tests).
- Virtual step: from eps = 1/b with the optimiser's momentum trace and its
  weight decay, meta step size 0.1 (paper Table 4 / reference). We mirror the
  real optimiser's direction exactly, Nesterov included. The reward loss is
  plain cross-entropy (the reference adds the meta model's L2 term; we keep
  weight decay in the virtual step, where it belongs to the optimiser).
- Reward forward: BatchNorm in training mode by default (batch statistics of
  the class-balanced reward batch, as the reference's meta forward;
  `config.meta_bn_train_mode=False` uses running statistics), statistics
  discarded. Forward only: no backward through the backbone.
- Weights: noise max(-grad, 0), long-tail raw - min(raw) + 1/b, divided by
  sum + 1e-5 (paper Sec. 5.2 and reference). All-zero weights mean no weighted
  update that step (reference behaviour).
- Dictionary: class-balanced by noisy label, |R| = C * k exactly; images kept
  on the device in the method state (refreshed on the host each epoch), so the
  jitted step draws class-balanced reward batches itself. Short classes repeat
  examples to keep balance. EMA of the score with momentum 0.9; the first
  visit initialises the EMA (no bias towards 0 for examples seen fewer times);
  never-seen examples rank last.
- Score (meta-margin, Eq. 5): "after" is l_i(theta*) at the virtual head
  (closed form) on the forward the meta step ran on: the clean training
  forward in the two-pass form, the mixed one in the one-pass form (see
  MixUp). "Before" follows the reference code by default
  (`score_before='train'`): the loss of the forward the weighted loss is
  trained on, i.e. the MixUp loss lam l(x~_i, y_i) + (1 - lam) l(x~_i, y_perm(i))
  when MixUp is on (two-pass: free, it comes out of the MixUp backward pass;
  one-pass: the same forward as "after", so the score is the drop of the mixed
  loss from theta to theta*). `score_before='clean'` is Eq. 5 read literally
  (clean loss before and after; two-pass only, a ConfigError with one-pass
  and MixUp on, where no clean forward exists). Measured here: with 'clean' the dictionary's purity
  stays at (or below) the data's clean rate (synthetic 0.63 -> 0.63;
  Fashion-MNIST 40% noise 0.66 -> 0.57): a not-yet-memorised mislabelled
  example has a large error, so its own term in the uniform virtual step
  drops its loss the most. This matches the paper's Fig. 6, where purity
  without MixUp is about the clean rate and MixUp "has great impact on the
  dictionary purity". With 'train' (MixUp on) the purity climbs (synthetic
  0.63 -> 0.99 in 5 epochs). Without MixUp both are the same.
- Re-labeling: EMA (decay 0.9) of softmax predictions, as the paper's Eq. 7
  (the reference keeps an EMA of normalised logits with a temperature);
  target = the EMA before the step; loss p * mean CE, after warm-up
  (`relabel_start_epoch`).
- MixUp (paper: on the weighted loss only). lam ~ Beta(alpha, alpha), one per
  batch, and a random partner permutation; both forms draw them (and the
  reward batch) from the same split of the step's method key, so for the same
  step they mix the same pairs. Two forms, `config.fsr.mixup_form`:
  - 'two_pass' (default for now; the choice awaits the accuracy evidence of
    issue 9): the meta step, scores and prediction EMA use the clean forward
    the shared step always runs, and one extra forward/backward on the mixed
    images carries the weighted loss (each label term weighted by its own
    example's weight: lam w_i l(x~_i, y_i) + (1 - lam) w_perm(i) l(x~_i,
    y_perm(i))) and the re-labeling loss with mixed soft targets (returned as
    `extra_grads`); the clean forward gets no backward. BatchNorm running
    statistics come from the clean forward (the distribution the model is
    evaluated on).
  - 'one_pass' (the reference code's form): `FSR.prepare_images` mixes the
    images before the step's single training forward (the `Method` hook), so
    the head-only meta step (head inputs and logit errors softmax(z~_i) -
    (lam t_i + (1 - lam) t_perm(i))), the meta-margin score and the actual
    loss all come from that one forward, plus the reward forward. Example i's
    weight w_i multiplies its whole MixUp loss (as the reference), and the
    weighted loss and the re-labeling loss (mixed soft target on the same
    logits) go through the step's own backward as one logit cotangent: no
    second forward, no `extra_grads`. The prediction EMA is fed the mixed
    forward's predictions: the only forward there is, and the closest to the
    reference, whose one forward's outputs feed everything (docs/design.md;
    not checked line by line against its re-labeling code). The step's
    `train_loss` / `train_accuracy` are those of the mixed logits against the
    noisy labels. BatchNorm running statistics come from the mixed forward.
  With MixUp off (`mixup_alpha = 0`) both forms are the same step.
- Warm-up / deferred start: `warmup_epochs` uniform weights (meta step and
  scores still run; re-weighting and re-labeling start after). The long-tail
  preset's deferred schedule is warmup_epochs = 160 of 200 (paper Sec. 5.2).
- Label smoothing on the training loss (virtual step, weighted loss, scores);
  the reward loss stays plain (paper: smoothing "for re-weighting").
- No clean meta set: `uses_meta_set = False`; presets set num_meta = 0 (a
  non-zero num_meta is allowed but those clean images are then simply held out).
"""

from famus_jax.fsr.config import check_config

__all__ = ['check_config']
