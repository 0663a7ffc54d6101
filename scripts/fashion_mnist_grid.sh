#!/bin/bash
# The README's accuracy grid: Fashion-MNIST (real, offline), 3 noise settings x
# 5 methods x seeds, configs/fashion_mnist_short.py. One run at a time (each
# uses the cores it is given); finished runs (summary.json present) are skipped,
# interrupted ones resume from their checkpoint.
#
#   bash scripts/fashion_mnist_grid.sh OUTDIR [SEEDS] [METHODS] [SETTINGS]
#   e.g. bash scripts/fashion_mnist_grid.sh runs/grid "0 1" "erm mwnet l2r famus fsr"
#
# SETTINGS: space-separated name:noise_type:noise_rate (default: sym40, sym60, asym40).
# Two copies may share an OUTDIR if they are given disjoint SEEDS or SETTINGS.
#
# Then: python -m famus_jax.report runs/grid/* --out=results/
set -euo pipefail
out=${1:?usage: fashion_mnist_grid.sh OUTDIR [SEEDS] [METHODS] [SETTINGS]}
seeds=${2:-0 1}
methods=${3:-erm mwnet l2r famus fsr}
settings=${4:-sym40:symmetric:0.4 sym60:symmetric:0.6 asym40:asymmetric:0.4}
for seed in $seeds; do
  for setting in $settings; do
    IFS=: read -r name noise rate <<< "$setting"
    for method in $methods; do
      dir="$out/${name}_${method}_s${seed}"
      [ -f "$dir/summary.json" ] && continue
      mkdir -p "$dir"
      echo "$(date +%T) $dir"
      python main.py --config=configs/fashion_mnist_short.py --workdir="$dir" \
        --config.method="$method" --config.seed="$seed" \
        --config.noise_type="$noise" --config.noise_rate="$rate" \
        --config.progress_bar=False > "$dir/log.txt" 2>&1
    done
  done
done
