#!/bin/bash
# The accuracy grid of the memorisation regime (configs/fashion_mnist_memorise.py): every
# method on the same 5000 noisy training images per seed. One run at a time; finished runs
# are skipped and interrupted ones resume (scripts/accuracy_grid.sh), so it can be stopped
# and restarted at will, and two copies can share OUTDIR with disjoint SEEDS or VARIANTS.
#
#   bash scripts/memorisation_grid.sh OUTDIR "SEEDS" ["VARIANTS"]
#   python -m famus_jax.tools.report OUTDIR --out=results/memorisation
#
# Default VARIANTS: the whole grid (about 8 hours per seed on one CPU core). The FaMUS
# ablations that separate its parts from exact MW-Net are not in the default list:
#   famus_nolg:method=famus,famus.lambda_g=0.0     L_g off
#   famus_all:method=famus,famus.strategy=all      every layer in every estimate
#   famus_cand_all:method=famus,famus.candidates=all  the samplers choose among every layer
set -euo pipefail
out=${1:?usage: memorisation_grid.sh OUTDIR SEEDS [VARIANTS]}
seeds=${2:-0 1 2}
# Each row names its actual step (meta.actual_step), its meta-update period (meta.update_every:
# 1 = every step, the papers'), FaMUS's exact warm-up (famus.exact_steps) and FaMUS's meta
# learning rate (famus.meta_lr_scale: 1 = the paper's, 3 = the preset's): its runs stay one
# variant whatever the defaults. mwnet_default and famus_default are the schema's defaults on
# this preset (amortised every fifth step at the scaled rate, FaMUS's 250 exact steps at 1x);
# famus_default is the same program as famus_reuse_every5_scaled_exact250_x1 of docs/results.md.
R=meta.actual_step=recompute,meta.update_every=1; U=meta.actual_step=reuse,meta.update_every=1
X=famus.exact_steps=0; P=famus.meta_lr_scale=1.0,$X; F=famus.meta_lr_scale=3.0,$X
all="erm mwnet:$R famus:$R,$P mwnet_reuse:$U famus_reuse:$U,$P
  famus_metalr3:method=famus,$R,$F famus_reuse_metalr3:method=famus,$U,$F
  mwnet_default:method=mwnet famus_default:method=famus
  l2r random_weight:method=random_weight mlc:$R mlc_reuse:$U
  famus_l2r:method=famus,famus.base=l2r,$X
  fsr fsr_paper:fsr.mixup_losses=weighted fsr_onepass:fsr.mixup_form=one_pass dividemix
  famus_pseudo:method=famus,meta_set=pseudo_clean,$U,$F mwnet_pseudo:method=mwnet,meta_set=pseudo_clean,$U"
variants=${3:-$all}
exec bash "$(dirname "$0")/accuracy_grid.sh" configs/fashion_mnist_memorise.py "$out" "$seeds" "$variants"
