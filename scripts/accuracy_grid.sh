#!/bin/bash
# An accuracy grid: one config, a list of method variants, seeds; one run at a time
# (each uses the cores it is given). Finished runs (summary.json present) are skipped,
# interrupted ones resume from their checkpoint.
#
#   bash scripts/accuracy_grid.sh CONFIG OUTDIR "SEEDS" "VARIANTS"
#
# VARIANTS: space-separated NAME or NAME:field=value,field=value. The method is the
# override method=..., else NAME's part before the first '_' (erm, mwnet, l2r, famus,
# fsr). Examples:
#   bash scripts/accuracy_grid.sh configs/fashion_mnist_long.py runs/long "0 1" \
#     "erm mwnet mwnet_reuse:meta.actual_step=reuse famus l2r fsr"
#   bash scripts/accuracy_grid.sh configs/fashion_mnist_short.py runs/grid "0" \
#     "sym40_erm:method=erm,noise_rate=0.4 asym40_erm:method=erm,noise_type=asymmetric" 
# Two copies may share an OUTDIR if they are given disjoint SEEDS or VARIANTS.
# Then: python -m famus_jax.tools.report OUTDIR --out=results/
set -euo pipefail
config=${1:?usage: accuracy_grid.sh CONFIG OUTDIR SEEDS VARIANTS}
out=${2:?usage: accuracy_grid.sh CONFIG OUTDIR SEEDS VARIANTS}
seeds=${3:-0 1}
variants=${4:-erm mwnet l2r famus fsr}
for seed in $seeds; do
  for variant in $variants; do
    name=${variant%%:*}
    method=${name%%_*}
    args=()
    if [[ "$variant" == *:* ]]; then
      IFS=, read -ra pairs <<< "${variant#*:}"
      for pair in "${pairs[@]}"; do
        [[ "$pair" == method=* ]] && method=${pair#method=}
        args+=("--config.$pair")
      done
    fi
    dir="$out/${name}_s${seed}"
    [ -f "$dir/summary.json" ] && continue
    mkdir -p "$dir"
    echo "$(date +%T) $dir"
    python main.py --config="$config" --workdir="$dir" --config.method="$method" \
      --config.seed="$seed" --config.progress_bar=False "${args[@]}" > "$dir/log.txt" 2>&1
  done
done
