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
- Score (meta-margin, Eq. 5): the loss drop l_i(theta) - l_i(theta*) of each
  training example, theta* the virtual head. Two-pass form: "after" on the
  clean training forward (closed form); "before" follows the reference code by
  default (`score_before='train'`: the MixUp loss lam_i l(x~_i, y_i) +
  (1 - lam_i) l(x~_i, y_perm(i)) that the weighted loss is trained on, free from
  the MixUp backward pass) or is the clean loss (`'clean'`, Eq. 5 read
  literally). One-pass form, as the reference code: "before" is the mixed
  forward's loss at theta, "after" the CLEAN images' loss at theta*, from one
  extra forward (no backward) of the reward batch and the clean training batch
  together. Measured with `'clean'` in the two-pass form: the dictionary's
  purity stays at (or below) the data's clean rate (a not-yet-memorised
  mislabelled example has a large error, so its own term in the uniform
  virtual step drops its loss the most), as the paper's Fig. 6 without MixUp;
  with 'train' (MixUp on) it climbs. Without MixUp both are the same.
- Re-labeling: EMA of softmax predictions, y^ <- b y^ + (1 - b) p with b =
  `relabel_momentum` = 0.1 (paper Eq. 7 with Table 4's beta = 0.1: 0.1 of the
  old estimate kept per visit; the reference code keeps 0.1 too, of normalised
  logits, `relabel_target='logit_ema'`); target = the EMA before the step; loss
  p * mean CE, after warm-up (`relabel_start_epoch`).
- MixUp: lam_i ~ Beta(alpha, alpha) per example, lam_i = max(lam_i, 1 - lam_i)
  in [0.5, 1] (`mixup_lambda='example_max'`, the reference code; 'batch' draws
  one lam for the batch), and a random partner permutation; w_i multiplies
  example i's whole MixUp loss (the reference code). Both forms draw lam, the
  partners and the reward batch from the same split of the step's method key.
  `config.fsr.mixup_losses` says which losses are mixed: 'all' (reference: the
  weighted and the re-labeling loss on the mixed forward) or 'weighted'
  (paper Sec. 4.3: the weighted loss only; re-labeling on the clean forward,
  which then needs its own backward pass; two-pass only).
  `config.fsr.mixup_form`:
  - 'two_pass' (default): the meta step, scores and prediction EMA use the
    clean forward the shared step always runs, and one extra forward/backward
    on the mixed images carries the weighted loss (returned as
    `extra_grads`). BatchNorm running statistics come from the clean forward
    (the distribution the model is evaluated on).
  - 'one_pass' (the reference code's form): `FSR.prepare_images` mixes the
    images before the step's single training forward (the `Method` hook), so
    the head-only meta step (head inputs and logit errors softmax(z~_i) -
    (lam_i t_i + (1 - lam_i) t_perm(i))), the "before" loss and the actual loss
    all come from that one forward, and the weighted loss and the re-labeling
    loss (mixed soft target on the same logits) go through the step's own
    backward as one logit cotangent: no second backward. The reward batch and
    the clean training images share one more forward (no backward): the
    reward features and the score's "after" loss. The prediction EMA is fed
    the mixed forward's predictions (as the reference code's EMA of logits).
    The step's `train_loss` / `train_accuracy` are those of the mixed logits
    against the noisy labels. BatchNorm running statistics come from the mixed
    forward.
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
