#!/bin/bash
# Copy what the report reads of a grid's finished runs (config.json, data_info.json,
# summary.json, and metrics.jsonl gzip-compressed; no checkpoints or logs) into a folder
# small enough to commit, so that the report can be remade without the workdirs. Unfinished
# runs are left out; a record already kept is replaced.
#
#   bash scripts/keep_run_records.sh runs/memorise results/memorisation_records
#   python -m famus_jax.tools.report results/memorisation_records \
#     --out=results/memorisation_records
#
# Ablations run into a grid folder of their own (runs/memorise_ablations) and are kept apart
# (results/memorisation_ablations), reported beside the grid's rows:
#   python -m famus_jax.tools.report results/memorisation_records \
#     results/memorisation_ablations --out=results/memorisation_ablations
set -euo pipefail
src=${1:?usage: keep_run_records.sh GRID_DIR RECORDS_DIR}
dst=${2:?usage: keep_run_records.sh GRID_DIR RECORDS_DIR}
for run in "$src"/*/; do
  run=${run%/}
  [ -f "$run/summary.json" ] || continue
  mkdir -p "$dst/$(basename "$run")"
  for f in config.json data_info.json summary.json; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dst/$(basename "$run")/$f"
  done
  gzip -9 -n -c "$run/metrics.jsonl" > "$dst/$(basename "$run")/metrics.jsonl.gz"
  echo "kept $(basename "$run")"
done
