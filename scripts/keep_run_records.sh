#!/bin/bash
# Copy what the report reads of a grid's finished runs (config.json, data_info.json,
# summary.json, metrics.jsonl; no checkpoints or logs) into a folder small enough to commit,
# so that the report can be remade without the workdirs. Unfinished runs are left out;
# a record already kept is replaced.
#
#   bash scripts/keep_run_records.sh runs/memorise results/memorisation_runs
#   python -m famus_jax.tools.report results/memorisation_runs --out=results/memorisation
set -euo pipefail
src=${1:?usage: keep_run_records.sh GRID_DIR RECORDS_DIR}
dst=${2:?usage: keep_run_records.sh GRID_DIR RECORDS_DIR}
for run in "$src"/*/; do
  run=${run%/}
  [ -f "$run/summary.json" ] || continue
  mkdir -p "$dst/$(basename "$run")"
  for f in config.json data_info.json summary.json metrics.jsonl; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dst/$(basename "$run")/$f"
  done
  echo "kept $(basename "$run")"
done
