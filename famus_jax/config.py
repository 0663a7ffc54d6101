"""The configuration schema: every field famus_jax reads, with its one default.

The presets (famus_jax/presets/*.py, re-exported by the repository's
configs/*.py) start from `get_config()` and change a few fields. Library code
never invents a value that is not declared here; `famus_jax.config_check.validate`
rejects unknown names and out-of-range values with a message naming the field.

Durations: `num_epochs` is the run length unless `num_steps` > 0, which then
wins. Learning-rate boundaries are in epochs.
"""

import ml_collections

# Fields whose default changed after runs were recorded without them: what a run that predates
# the field did (its config.json or checkpoint record lacks the field), where that differs from
# today's default (`record_defaults`): the report reads such records with these values, so an
# old run never takes a new default's name, and resuming one under the new default is a change.
BEFORE_THE_FIELD = {
    'meta.update_every': 1,              # every step (the papers')
    'meta.amortised_lr': 'same',         # the base's meta learning rate
    'famus.exact_steps': 0,              # the sampled estimate from the first step
    'famus.exact_meta_lr_scale': None,   # famus.meta_lr_scale throughout
    'meta.actual_step': 'recompute',     # the papers' update (the only one then)
}


# Fields whose value may be None (a meaning of its own, in the comment at the field); on the
# command line `--config.FIELD=None` (famus_jax/cli.py).
NULLABLE = ('meta.update_every', 'famus.exact_meta_lr_scale')


def record_defaults() -> ml_collections.ConfigDict:
  """What a run record lacking a field ran with: `get_config()` with `BEFORE_THE_FIELD`."""
  c = get_config()
  for dotted, value in BEFORE_THE_FIELD.items():
    group, field = dotted.split('.')
    c[group][field] = value
  return c


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---- data ---------------------------------------------------------------
  # cifar10 | cifar100 | fashion_mnist | synthetic | image_folder | the real-noise sets below |
  # arrays (in-memory arrays given to the Python API, famus_jax/api.py)
  c.dataset = 'cifar10'
  c.data_source = 'auto'         # auto | tfds | idx | cifar_archive | synthetic
  #                                image_folder: auto | list_file | class_folders
  c.data_dir = ''                # TFDS data_dir, IDX directory or CIFAR archive directory
  c.download = True  # fetch the official CIFAR archive into data_dir (or ~/.cache/famus_jax)
  c.cifar_url = ''  # '' = the official URL; a file:// or http(s) URL of the same archive
  c.noise_type = 'symmetric'     # none | symmetric | asymmetric
  c.noise_rate = 0.4             # in [0, 1)
  c.imbalance_factor = 1.0       # n_max / n_min; 1 = balanced
  c.num_meta = 1000              # clean, class-balanced meta images (removed from train)
  c.train_subset = 0             # > 0: class-balanced subset of this many training images
  # Where the meta (validation) batches of mwnet / l2r / famus come from:
  #   clean:        the held-out clean meta images (num_meta of them);
  #   pseudo_clean: no clean data; two co-trained networks, each one's meta set is the other's
  #                 per-epoch pseudo-clean division of the training set (FaMUS supplement
  #                 Alg. 2; famus_jax/train/cotrain_run.py; num_meta may be 0).
  # method='dividemix' always trains the pair (it has no meta batches; either value).
  c.meta_set = 'clean'
  # Real label noise (dataset cifar10n | cifar100n | cnwl; famus_jax/data/real_noise.py): the
  # given labels are the training labels; noise_type must be 'none' and imbalance_factor 1.
  c.noisy_label_set = 'worst'    # cifar10n: aggre | worst | random1 | random2 | random3;
  #                                cifar100n: noisy (CIFAR-N's human label sets)
  c.noisy_label_file = ''        # a CIFAR-N annotation file (.pt/.npy/.csv); '' = in data_dir
  # True: the num_meta meta images are training images with their CLEAN labels (MW-Net's
  # protocol); False: no clean labels are used, num_meta must be 0.
  c.clean_meta_from_train = False
  c.cnwl = ml_collections.ConfigDict()
  c.cnwl.color = 'red'           # red (web noise) | blue (synthetic flips): mini-ImageNet config
  c.cnwl.noise_level = 0.4       # 0.0 | 0.05 | 0.1 | 0.15 | 0.2 | 0.3 | 0.4 | 0.5 | 0.6 | 0.8
  c.cnwl.image_size = 0          # 0 = the stored 84x84; N > 0: resized to NxN (FaMUS: 32)
  c.synthetic = ml_collections.ConfigDict()
  c.synthetic.num_train = 512    # synthetic source only (tests, smoke runs)
  c.synthetic.num_test = 128
  c.synthetic.image_size = 8
  c.synthetic.channels = 3
  c.synthetic.num_classes = 10
  c.augment = ml_collections.ConfigDict()
  c.augment.crop_padding = 4     # 0 disables random crops
  c.augment.flip = True          # random horizontal flips
  # Training crop (famus_jax/data/augment.py): pad = zero padding by crop_padding + random crop
  # (CIFAR); resized = random resized crop to crop_size x crop_size (ImageNet / Inception).
  c.augment.crop = 'pad'
  # resized: output side. image_folder test images are centre crops of this size; other data
  # sets evaluate their test images whole, so set it to their image side.
  c.augment.crop_size = 224
  c.augment.crop_scale = (0.08, 1.0)  # resized: (min, max) area of the crop / area of the image
  c.augment.crop_ratio = (3 / 4, 4 / 3)  # resized: (min, max) aspect ratio width / height
  c.augment.crop_attempts = 10   # resized: draws per example before the central fallback crop
  # Image files on disk (dataset='image_folder'; famus_jax/data/image_folder.py): Clothing1M,
  # WebVision and any root/<class>/*.jpg folder. Paths are relative to data_dir. Each split is a
  # list file of '<image path> <label>' lines (*_list), or of bare image paths whose labels are
  # looked up in a '<image path> <label>' file (*_labels); the image paths in it are relative to
  # data_dir/*_root. data_source='class_folders' reads data_dir/*_root/<class>/* instead (class =
  # sorted folder index). Images are decoded on demand (Pillow), never held as a whole.
  c.image_folder = ml_collections.ConfigDict()
  c.image_folder.train_list = ''    # list_file: required
  c.image_folder.train_labels = ''  # '' = the labels are in train_list
  c.image_folder.train_root = ''    # class_folders: the folder of the class folders
  c.image_folder.meta_list = ''     # '' = the meta set comes out of the training set (num_meta)
  c.image_folder.meta_labels = ''   # else num_meta class-balanced images are drawn from this list
  c.image_folder.meta_root = ''     # class_folders: a folder of class folders of meta images
  c.image_folder.test_list = ''     # list_file: required
  c.image_folder.test_labels = ''
  c.image_folder.test_root = ''
  c.image_folder.num_classes = 0    # > 0: keep labels < this (mini-WebVision: 50); 0 = all
  c.image_folder.class_names_file = ''  # one class name per line, line i = label i; '' = class_i
  c.image_folder.image_size = 256   # stored side: shorter side resized to this, centre square
  c.image_folder.resample = 'bilinear'  # Pillow filter: nearest | bilinear | bicubic | lanczos
  c.image_folder.jpeg_draft = True  # let libjpeg decode at the smallest scale >= image_size
  c.image_folder.decode_threads = 8  # host threads decoding a batch; 0 = the calling thread
  c.image_folder.check_files = True  # check at start that every listed image file exists
  c.image_folder.mean = (0.485, 0.456, 0.406)  # per-channel normalisation, [0, 1] units
  c.image_folder.std = (0.229, 0.224, 0.225)   # (ImageNet's statistics)
  c.image_folder.stats_sample = 0   # > 0: mean / std from this many evenly spaced train images

  # ---- model --------------------------------------------------------------
  # resnet | wide_resnet | preact_resnet18 | small_cnn | resnet50 | custom (a Flax module given
  # to the Python API, famus_jax/api.py)
  c.model = 'wide_resnet'
  c.depth = 28                   # resnet: 6n+2 (e.g. 32); wide_resnet: 6n+4 (e.g. 28)
  c.width = 10                   # wide_resnet widening factor; small_cnn channels
  c.base_width = 64              # resnet50: stem / first-stage channels (64 = torchvision's)
  c.dropout = 0.0                # wide_resnet dropout inside blocks
  c.bn_momentum = 0.9            # running-statistics decay

  # ---- optimisation -------------------------------------------------------
  c.method = 'mwnet'             # erm | mwnet | l2r | mlc | famus | fsr | dividemix
  c.batch_size = 100
  c.meta_batch_size = 100
  c.eval_batch_size = 500
  c.num_epochs = 120
  c.num_steps = 0                # > 0 overrides num_epochs
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 5e-4
  c.lr = ml_collections.ConfigDict()
  c.lr.schedule = 'multistep'    # constant | multistep | cosine
  c.lr.base = 0.1
  c.lr.boundaries_epochs = (80, 100)
  c.lr.decay = 0.1
  c.lr.warmup_epochs = 0.0

  # ---- meta re-weighting --------------------------------------------------
  c.mwnet = ml_collections.ConfigDict()
  c.mwnet.hidden = 100           # Linear(1, hidden) - ReLU - Linear(hidden, 1) - sigmoid
  c.mwnet.lr = 1e-3
  c.mwnet.momentum = 0.9
  c.mwnet.weight_decay = 1e-4
  c.mwnet.normalize = True       # divide weights by their sum (if non-zero)
  c.l2r = ml_collections.ConfigDict()
  c.l2r.zero_sum = 'uniform'     # uniform | zero: weights when all clipped weights are 0
  # MLC (famus_jax/methods/mlc.py): a learned noise transition matrix T = row-softmax(Theta)
  # corrects the loss, -log (softmax(z) T)_y; Theta starts at s * I.
  c.mlc = ml_collections.ConfigDict()
  c.mlc.init_diagonal = 0.9      # T's initial diagonal, in (0, 1); (1 - it) / (C - 1) elsewhere
  c.mlc.lr = 1.0                 # SGD on Theta (the FaMUS supplement's 1e-5 hardly moves T)
  c.mlc.momentum = 0.9
  c.mlc.weight_decay = 0.0       # on Theta (> 0 pulls T towards uniform rows)
  c.meta = ml_collections.ConfigDict()
  # The actual update of mwnet / mlc / famus (L2R has one form only):
  #   reuse:     the virtual step's gradient sum_i eps_i(theta) grad L_i, already computed:
  #              one training backward per step; theta' acts from the next step on. The
  #              default: as accurate as recompute on the memorisation grid (docs/results.md).
  #   recompute: grad of sum_i eps_i(theta') L_i, the new meta model's weights (paper Eq. 5);
  #              a second backward pass over the training batch.
  c.meta.actual_step = 'reuse'
  # Amortised meta updates (mwnet, mlc, famus on those bases; methods without a meta model
  # ignore it): the meta model is updated on every k-th step only; the steps between train on
  # its current weights (one forward of the small meta model). 1 = every step (the papers).
  # None = the method's own period (famus_jax/catalogue.py, `update_every`): 5 for MW-Net and
  # FaMUS on it (on the memorisation grid level with or above every step, FaMUS at 1.1x ERM's
  # wall time with the exact warm-up below), 1 for MLC and FaMUS on it (MLC every fifth step
  # ended 2.7 points lower, on every seed); docs/results.md.
  c.meta.update_every = ml_collections.config_dict.placeholder(int)
  # The meta model's learning rate under update_every = k > 1: scaled: x k (it moves about as
  # far per epoch as with k = 1) | same: the base's (it learns k times slower per epoch; cost
  # MW-Net 1.3 points on the memorisation grid). No effect at k = 1.
  c.meta.amortised_lr = 'scaled'
  c.meta_gradient = 'jvp'        # jvp (production) | reverse_over_reverse (reference path)
  c.meta_bn_train_mode = True    # meta / reward forward passes use batch statistics (else running)

  # ---- FaMUS (famus_jax/famus) -------------------------------------------
  c.famus = ml_collections.ConfigDict()
  c.famus.base = 'mwnet'         # mwnet | l2r | mlc: the meta-learning method FaMUS accelerates
  c.famus.strategy = 'learned'   # learned (samplers) | all (exact) | block | random | static
  c.famus.candidates = 'reference'  # reference (last stage, head on) | all (paper) | regexes
  c.famus.always_on = ''         # regexes of layers in every estimate ('' = none)
  c.famus.target_active = 4.0    # K of L_r = (sum_l r_l - K)^2
  c.famus.lambda_r = 0.1         # lambda1
  c.famus.lambda_g = 0.1         # lambda2
  c.famus.lg_form = 'avgpool'    # avgpool (paper Eq. 11) | meanstd (reference code)
  c.famus.lc_weight = 1.0        # weight of the linearised L_c term in the samplers' loss
  c.famus.lc_normalize = True    # L_c term as a share of ||g'||^2 (False: raw first-order term)
  # The meta model's lr under FaMUS = this x its base's (mwnet.lr, mlc.lr; L2R has no meta
  # model). 1 = the paper's beta. The layer-restricted meta gradient is about half as long
  # as the exact one, so at the base's lr the meta model learns slower (docs/results.md).
  c.famus.meta_lr_scale = 1.0
  c.famus.sampler_lr = 0.1       # delta (1e-2 for long-tail in the paper)
  c.famus.sampler_momentum = 0.9
  c.famus.sampler_hidden = 128
  c.famus.sampler_depth = 2      # linear layers: 2 (paper) | 3 (reference code)
  c.famus.standardize_inputs = True  # (x - mean) / (std + 1e-9) per sampler input
  c.famus.temperature = 5.0      # Gumbel-softmax temperature (straight-through gradient)
  c.famus.block = -1             # strategy=block: residual block b (1-based; -1 = top block)
  c.famus.num_random = 4         # strategy=random: s random candidate layers per step
  c.famus.static_layers = 'top'  # strategy=static: regexes of layers, or top (last K candidates)
  c.famus.floor_buckets = 'block'  # layer | block | stage: one compiled variant per floor group
  c.famus.jvp = 'sparse'         # sparse (step's JVP, zeros skipped) | restricted | linearized
  c.famus.l2r_sampler_input = 'uniform_grad'  # base=l2r: uniform_grad | momentum
  c.famus.variance_decay = 0.98  # EMA decay of the running variance of ||g'||
  c.famus.guess_window = 16      # learned: run the lowest floor bucket of the last N steps
  # The first N training steps estimate with every layer (the exact meta gradient; the
  # samplers still draw and learn), the later ones with the sampled layers. 0 = from the first
  # step (the paper). The sampled estimate can start inverted (weights favouring mislabelled
  # examples) and amortised updates at a scaled rate lock that in; 250 steps (5 of the
  # memorisation preset's 40 epochs) of exact estimates let the meta model find its sign first.
  c.famus.exact_steps = 250
  # The meta lr scale of the meta updates within exact_steps: the exact estimate is not the
  # shorter restricted one that meta_lr_scale lengthens, so 1 = its base's rate (x k under
  # meta.amortised_lr = scaled); None = famus.meta_lr_scale throughout.
  c.famus.exact_meta_lr_scale = 1.0

  # ---- FSR (famus_jax/fsr) ------------------------------------------------
  c.fsr = ml_collections.ConfigDict()
  c.fsr.dictionary_size = 2000   # |R|: class-balanced ids by noisy label; a multiple of the classes
  c.fsr.reward_batch_size = 100  # q: class-balanced reward batch drawn from R every step
  c.fsr.meta_lr = 0.1            # constant step size of the virtual head update
  c.fsr.score_momentum = 0.9     # EMA momentum of the per-example meta-margin score
  c.fsr.score_before = 'train'   # margin's loss before the step: train (MixUp forward) | clean
  c.fsr.warmup_epochs = 2        # uniform weights before this epoch (deferred start: e.g. 160)
  c.fsr.weight_mode = 'noise'    # noise: max(-grad, 0) | longtail: raw - min(raw) + 1/b
  c.fsr.relabel = True           # momentum re-labeling (EMA of predictions as soft targets)
  # b of the EMA: the share of the old estimate kept per visit (paper Eq. 7 with Table 4's
  # beta = 0.1: the target follows the current prediction closely; the reference code's too)
  c.fsr.relabel_momentum = 0.1
  # prob_ema: EMA of softmax predictions, the target (paper Eq. 7) | logit_ema: EMA of logits,
  # target softmax of their RMS-normalised value (the reference code)
  c.fsr.relabel_target = 'prob_ema'
  c.fsr.relabel_weight = 2.0     # p: multiplier of the re-labeling loss
  c.fsr.relabel_start_epoch = -1  # -1: same as warmup_epochs
  c.fsr.mixup_alpha = 1.0        # MixUp Beta(alpha, alpha) on the weighted loss; 0 = off
  # batch: one lam per batch (MixUp) | example_max: lam_i per example, max(lam_i, 1 - lam_i)
  # (MixMatch; the reference code), so each mixed example is mostly its own
  c.fsr.mixup_lambda = 'example_max'
  # How MixUp (mixup_alpha > 0) enters the step (famus_jax/fsr/__init__.py):
  #   two_pass: the step's forward is clean (head-only meta step, scores, prediction EMA);
  #             one extra forward/backward on the mixed images carries the weighted loss.
  #   one_pass: the step's single forward runs on the mixed images and feeds the meta step,
  #             the scores and the weighted loss (the reference code); one backward.
  c.fsr.mixup_form = 'two_pass'
  # Which losses MixUp applies to (both forms weight each example's whole MixUp loss by w_i):
  #   all:      the weighted loss and the re-labeling loss, on the mixed forward (reference code);
  #   weighted: the weighted loss only (paper Sec. 4.3); re-labeling on the clean forward, which
  #             then gets its own backward pass (two_pass only).
  c.fsr.mixup_losses = 'all'
  c.fsr.label_smoothing = 0.0    # on the training loss (0.1 for long-tail)

  # ---- co-training (meta_set='pseudo_clean'; famus_jax/train/cotrain_run.py) ----------
  c.cotrain = ml_collections.ConfigDict()
  c.cotrain.warmup_epochs = 1    # plain cross-entropy epochs before the first division (>= 1)
  c.cotrain.gmm_max_iter = 10    # EM iterations of the two-Gaussian loss mixture (DivideMix)
  c.cotrain.gmm_tol = 1e-2       # EM stops when the mean log-likelihood changes by less
  c.cotrain.gmm_reg_covar = 5e-4  # added to both variances
  c.cotrain.clean_threshold = 0.5  # pseudo-clean: clean probability c_i > this
  c.cotrain.min_pseudo_clean = 0  # fewer pass: the top-k by c_i; 0 = meta_batch_size
  # The semi-supervised part (DivideMix's MixMatch step; famus_jax/cotrain/semi_supervised.py):
  # always on for method='dividemix'; for mwnet / l2r / famus with meta_set='pseudo_clean' when
  # semi_supervised=True (each member trains on the other's labelled / unlabelled split).
  c.cotrain.semi_supervised = False
  c.cotrain.labelled_threshold = 0.5  # labelled: the partner's c_i > this (DivideMix p_threshold)
  c.cotrain.unlabelled_batch_size = 0  # unlabelled images per step; 0 = batch_size
  c.cotrain.sharpen_temperature = 0.5  # T of label refinement and co-guessing
  c.cotrain.mixup_alpha = 4.0    # MixUp lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam)
  c.cotrain.lambda_u = 25.0      # unlabelled squared-error weight after the ramp-up
  c.cotrain.rampup_epochs = 16.0  # lambda_u ramps linearly over this many epochs after warm-up
  # The member's own guessing forwards (training mode, no gradient) update its BatchNorm running
  # statistics before the mixed forward does, as the reference code's (PyTorch's no_grad forwards
  # in training mode do); False: only the mixed rows set them.
  c.cotrain.guess_updates_bn = True
  c.cotrain.prior_penalty_weight = 1.0  # uniform-prior penalty on the mixed batch's predictions

  # ---- meta-gradient quality tool (python -m famus_jax.quality) -------------
  c.quality = ml_collections.ConfigDict()
  c.quality.every = 10           # compare the estimators with the exact gradient every N steps
  c.quality.random_draws = 8     # random layer sets drawn per check (their variance)

  # ---- run ----------------------------------------------------------------
  c.log_every = 50
  c.eval_every = 1000            # steps; evaluation also runs at the end
  # At every evaluation, also the eval-mode fit of the training set to its given labels, on the
  # correctly and the wrongly labelled examples apart (train_fit_clean / train_fit_noisy in the
  # 'eval' record: how much label noise the network has memorised); synthetic noise only.
  c.eval_train_fit = True
  c.checkpoint_every = 1000      # steps; a checkpoint is also written at the end
  c.keep_checkpoints = 2
  c.progress_bar = True
  # Also write the scalars of the 'train' and 'eval' events (step as the x axis) as TensorBoard
  # event files in <workdir>/tensorboard/, to watch with `tensorboard --logdir WORKDIR`;
  # metrics.jsonl stays the record. Needs tensorboardX (pip install tensorboardX), not
  # TensorFlow; only process 0 writes (famus_jax/train/tensorboard.py).
  c.tensorboard = False
  # Training batches built ahead on a host thread while the step runs (famus_jax/train/
  # prefetch.py; the same batches in the same order); 0 = each batch when its step starts.
  c.prefetch_batches = 1
  c.diagnostics_every = 0        # > 0: exact-vs-estimate meta-gradient checks
  c.weights_log_every = 10       # > 0: log the batch's example weights + noisy flags (report plots)
  # What to do when the workdir holds a checkpoint whose run fingerprint (the config minus the
  # fields in famus_jax.train.checkpoint.RESUMABLE_FIELDS, plus the data's identity) differs
  # from this config's:
  #   auto:          resume when the fingerprints match; otherwise stop, listing the differences,
  #                  before anything in the workdir is written;
  #   allow_changes: resume anyway (a deliberate change, e.g. more num_steps or a new lr); the
  #                  differences are printed and recorded in metrics.jsonl ('resume' event).
  # A change of the state's structure (method, model, width...) can never be resumed.
  c.resume = 'auto'

  # ---- past one machine (famus_jax/train/distributed.py; docs/running.md) ------------------
  # Every process of a job runs the same command; jax.distributed connects them and one mesh
  # spans the devices of all. The defaults mean one process (jax.distributed is not used).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.num_processes = 1  # processes of the job; 1 = one; 0 = from the cluster (SLURM...)
  c.distributed.process_id = -1  # this process's rank in [0, num_processes); -1 = from the cluster
  c.distributed.coordinator_address = ''  # 'host:port' of process 0; '' = $JAX_COORDINATOR_ADDRESS
  c.distributed.local_device_ids = ''  # e.g. '0,1': this process's devices; '' = all local ones
  c.distributed.initialization_timeout_s = 300  # wait this long for every process to join
  c.distributed.heartbeat_timeout_s = 100  # a process silent this long counts as dead
  return c
