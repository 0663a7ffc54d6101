#!/bin/bash
# Copy what the report reads of a grid's finished runs (config.json, data_info.json,
# summary.json, and metrics.jsonl gzip-compressed; no checkpoints or logs) into a folder
# small enough to commit, so that the report can be remade without the workdirs. Unfinished
# runs are left out; a record already kept is replaced. RUN names (optional) keep only those
# runs of the grid (the ablations go to a folder of their own).
#
#   bash scripts/keep_run_records.sh runs/memorise results/memorisation_records
#   python -m famus_jax.tools.report results/memorisation_records \
#     --out=results/memorisation_records
#   bash scripts/keep_run_records.sh runs/memorise results/memorisation_ablations \
#     mwnet_reuse_every2_scaled_s0 ...
#   python -m famus_jax.tools.report results/memorisation_records \
#     results/memorisation_ablations --out=results/memorisation_ablations
set -euo pipefail
usage='usage: keep_run_records.sh GRID_DIR RECORDS_DIR [RUN...]'
src=${1:?$usage}
dst=${2:?$usage}
shift 2
if [ $# -gt 0 ]; then
  runs=()
  for name in "$@"; do
    [ -d "$src/$name" ] || { echo "keep_run_records.sh: no run $src/$name" >&2; exit 1; }
    runs+=("$src/$name")
  done
else
  runs=("$src"/*/)
fi
for run in "${runs[@]}"; do
  run=${run%/}
  [ -f "$run/summary.json" ] || continue
  mkdir -p "$dst/$(basename "$run")"
  for f in config.json data_info.json summary.json; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dst/$(basename "$run")/$f"
  done
  gzip -9 -n -c "$run/metrics.jsonl" > "$dst/$(basename "$run")/metrics.jsonl.gz"
  echo "kept $(basename "$run")"
done
