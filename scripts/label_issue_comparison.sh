#!/bin/bash
# Label-error detection against confident learning (docs/results.md): per noise setting, one
# run each of mwnet, famus, fsr and the pseudo-clean pair (famus on the pair's meta sets) on
# the same Fashion-MNIST images and noisy labels (configs/fashion_mnist_short.py, seed 0), then
# scripts/confident_learning.py ranks them beside cleanlab fed K-fold out-of-fold
# probabilities of the same network trained with ERM.
#
#   bash scripts/label_issue_comparison.sh OUTDIR CLEANLAB_PYTHON ["SETTINGS"]
#
# CLEANLAB_PYTHON: a Python with cleanlab and this package installed (cleanlab is AGPL and not
# a dependency: python -m venv cl && cl/bin/pip install . cleanlab). Runs are resumed and
# finished ones skipped, so the script can be stopped and restarted at will. Default SETTINGS:
#   sym40:noise_type=symmetric,noise_rate=0.4 sym60:noise_type=symmetric,noise_rate=0.6
#   asym40:noise_type=asymmetric,noise_rate=0.4
set -euo pipefail
out=${1:?usage: label_issue_comparison.sh OUTDIR CLEANLAB_PYTHON [SETTINGS]}
cl_python=${2:?usage: label_issue_comparison.sh OUTDIR CLEANLAB_PYTHON [SETTINGS]}
settings=${3:-sym40:noise_type=symmetric,noise_rate=0.4 sym60:noise_type=symmetric,noise_rate=0.6
  asym40:noise_type=asymmetric,noise_rate=0.4}
here=$(dirname "$0")
for setting in $settings; do
  name=${setting%%:*}
  fields=${setting#*:}
  variants="mwnet:method=mwnet,$fields famus:method=famus,$fields fsr:method=fsr,$fields
    pair:method=famus,meta_set=pseudo_clean,$fields"
  bash "$here/accuracy_grid.sh" configs/fashion_mnist_short.py "$out/$name" 0 "$variants"
  runs=$out/$name/mwnet_s0,$out/$name/famus_s0,$out/$name/fsr_s0,$out/$name/pair_s0
  echo "$(date +%T) $out/$name/confident_learning"
  "$cl_python" "$here/confident_learning.py" --workdirs="$runs" --folds=5 \
    --out="$out/$name/confident_learning" > "$out/$name/confident_learning.log" 2>&1
  cat "$out/$name/confident_learning/comparison.md"
done
