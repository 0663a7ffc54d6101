#!/bin/bash
# The accuracy grid of the memorisation regime (configs/fashion_mnist_memorise.py): every
# method on the same 5000 noisy training images per seed. One run at a time; finished runs
# are skipped and interrupted ones resume (scripts/accuracy_grid.sh), so it can be stopped
# and restarted at will, and two copies can share OUTDIR with disjoint SEEDS or VARIANTS.
#
#   bash scripts/memorisation_grid.sh OUTDIR "SEEDS" ["VARIANTS"]
#   python -m famus_jax.tools.report OUTDIR --out=results/memorisation
#
# Default VARIANTS: the table of docs/results.md (about 7 hours per seed on one CPU core):
# each method with its defaults, and the papers' algorithms where the defaults differ. A default
# row (NAME_default, and the rows with no fields) takes the schema's defaults, whatever they
# are; the others name every field that sets them apart (meta.actual_step, meta.update_every,
# FaMUS's warm-up famus.exact_steps and its meta rate famus.meta_lr_scale), so they stay the
# same program when a default changes.
#
# The ablations of docs/results.md run into a folder of their own (kept apart from the table's
# rows and reported beside them), e.g.:
#   bash scripts/memorisation_grid.sh runs/memorise_ablations "0 1 2" \
#     "mwnet_reuse_every2_scaled:method=mwnet,meta.update_every=2 famus_nolg:method=famus,famus.lambda_g=0.0"
# famus.lambda_g=0.0 (L_g off), famus.strategy=all (every layer in every estimate),
# famus.candidates=all (the samplers choose among every layer), famus.meta_lr_scale=1.0 (the
# paper's meta rate), famus.exact_meta_lr_scale=None (the warm-up at meta_lr_scale).
set -euo pipefail
out=${1:?usage: memorisation_grid.sh OUTDIR SEEDS [VARIANTS]}
seeds=${2:-0 1 2}
R=meta.actual_step=recompute,meta.update_every=1; U=meta.actual_step=reuse,meta.update_every=1
X=famus.exact_steps=0
all="erm mwnet:$R mwnet_reuse:$U mwnet_default:method=mwnet
  l2r random_weight:method=random_weight mlc:$R mlc_default:method=mlc
  famus_default:method=famus famus_default_recompute:method=famus,meta.actual_step=recompute
  famus_l2r:method=famus,famus.base=l2r,$X
  fsr fsr_onepass:fsr.mixup_form=one_pass fsr_paper:fsr.mixup_losses=weighted dividemix
  famus_pseudo:method=famus,meta_set=pseudo_clean,$U,famus.meta_lr_scale=3.0,$X
  mwnet_pseudo:method=mwnet,meta_set=pseudo_clean,$U"
variants=${3:-$all}
exec bash "$(dirname "$0")/accuracy_grid.sh" configs/fashion_mnist_memorise.py "$out" "$seeds" "$variants"
