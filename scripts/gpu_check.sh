#!/bin/bash
# The GPU check: the tests that matter on a CUDA GPU, a 2-step run of every method (twice,
# for determinism), then the benchmark of ResNet-32 and WRN-28-10 at batch 100, ours and,
# where torch with CUDA is installed, the PyTorch peer. Sized to take under 5 minutes on one
# GPU (each stage has a time limit; not yet timed on a GPU).
#
#   bash scripts/gpu_check.sh OUTDIR          # GPU settings (falls back to --cpu without one)
#   bash scripts/gpu_check.sh OUTDIR --cpu    # small settings on the CPU: CI's "does it rot"
#                                             # (tests collected only, erm and mwnet runs,
#                                             # ResNet-8 at batch 8 benchmarked)
#
# Writes under OUTDIR: <stage>.txt (each stage's log: pytest, runs, bench_<model>), runs/ and
# runs.json (the 2-step runs), bench_<model>.json / .md (the benchmark's own files),
# gpu_check.json (every stage with its status and seconds, the device, versions) and
# gpu_check.md (the same as a report, with the benchmark tables), jax_cache/ (compiled
# programs). Exits non-zero when a stage failed; later stages still run.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR [--cpu]}
mode=gpu
[ "${2:-}" = "--cpu" ] && mode=cpu
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
# Tests start child processes that need the GPU too: no process may take most of it.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
# Compiled programs are shared between the runs, the tests' child processes and reruns.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$out/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}

backend=$($py -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)
if [ "$mode" = gpu ] && [ "$backend" != gpu ] && [ "$backend" != cuda ]; then
  echo "gpu_check: JAX backend is '$backend', no CUDA GPU: running the --cpu settings"
  mode=cpu
fi
# CPU mode only checks that every stage still runs: XLA's cheapest optimisation level (compiling
# is most of its time; its benchmark figures mean nothing).
if [ "$mode" = cpu ]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
fi
torch_device=$($py -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' \
  2>/dev/null || echo none)
bench=famus_jax.tools.benchmark

status=0
stages="$out/stages.tsv"
: > "$stages"
# stage NAME TIMEOUT_S CMD...: runs CMD with a time limit, logs its status and seconds.
stage() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  rc=$?
  tail -n 3 "$out/$name.txt"
  [ $rc -ne 0 ] && status=1
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$stages"
}

# The tests that matter on a GPU: meta-gradient exactness in float32 (the production JVP
# against reverse-over-reverse; FaMUS's and FSR's estimates), the peer's float64
# equivalence, and a killed-and-resumed run equal to an uninterrupted one. With --cpu they
# are only collected: CI runs them in its suite; here the check is that the selections
# still name tests (pytest fails on a node id that no longer exists).
collect=()
[ "$mode" = cpu ] && collect=(--collect-only)
stage pytest 240 $py -m pytest -q -p no:cacheprovider "${collect[@]}" \
  tests/test_meta_gradient.py tests/test_torch_peer.py \
  tests/test_famus.py::test_all_layers_equal_the_exact_meta_gradient \
  tests/test_famus.py::test_fixed_mask_equals_reference_code_semantics \
  tests/test_famus.py::test_sparse_jvp_equals_the_dense_one \
  tests/test_fsr.py::test_closed_form_matches_autodiff_through_virtual_head \
  tests/test_fsr.py::test_closed_form_equals_famus_restricted_head_gradient \
  tests/test_trainer.py::test_sigkill_and_resume_matches_uninterrupted_run

run_model=small_cnn; run_steps=2
if [ "$mode" = gpu ]; then
  models="resnet32 wrn-28-10"; batch=100; image=32; steps=5; settle=10
  methods=erm,mwnet,l2r,famus,fsr; bench_limit=150; run_methods=$methods
else
  models="resnet8"; batch=8; image=8; steps=2; settle=0
  methods=erm; bench_limit=120; run_methods=erm,mwnet
fi

# Every method (--cpu: two of them) for 2 steps, twice from the same seed: the metrics must
# agree bit for bit (the second copy reuses the first one's compiled programs through the
# persistent cache).
stage runs 240 $py - "$out/runs" "$run_model" "$run_steps" "$run_methods" <<'EOF'
import json, os, sys

from famus_jax.presets import tiny
from famus_jax.train.logbook import read_metrics
from famus_jax.train.trainer import train_and_evaluate

root, model, steps, methods = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
report, ok = {}, True
for method in methods.split(','):
  logs = []
  for copy in ('a', 'b'):
    c = tiny.get_config()
    c.method, c.model = method, model
    if model == 'resnet':
      c.depth = 8
    c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 1, steps, steps
    c.fsr.warmup_epochs = 0   # re-weight from the first step
    c.fsr.dictionary_size = 40
    c.fsr.reward_batch_size = 10
    summary = train_and_evaluate(c, os.path.join(root, f'{method}_{copy}'))
    events = read_metrics(os.path.join(root, f'{method}_{copy}'))
    logs.append([{k: e[k] for k in sorted(e) if 'time' not in k}
                 for e in events if e['event'] in ('train', 'eval')])
  same = logs[0] == logs[1]
  finite = summary['steps'] == steps
  ok &= same and finite
  report[method] = {'deterministic': same, 'steps': summary['steps'],
                    'last_test_accuracy': summary.get('last_test_accuracy')}
  print(method, report[method], flush=True)
with open(os.path.join(os.path.dirname(root), 'runs.json'), 'w') as f:
  json.dump(report, f, indent=2)
sys.exit(0 if ok else 1)
EOF

peers=()
if [ "$torch_device" = cuda ] || { [ "$mode" = cpu ] && [ "$torch_device" = cpu ]; }; then
  peers=(--peers=torch)
fi
for model in $models; do
  # No persistent cache here: the benchmark reads each compiled step's memory analysis.
  stage "bench_$model" "$bench_limit" env -u JAX_COMPILATION_CACHE_DIR \
    $py -m $bench --model="$model" --batch_size="$batch" --image_size="$image" \
    --methods="$methods" --steps="$steps" --settle_steps="$settle" \
    "${peers[@]}" --out="$out/bench_$model.json"
done

$py - "$out" "$mode" "$backend" "$torch_device" "$bench" <<'EOF'
import datetime, glob, json, os, platform, subprocess, sys

out, mode, backend, torch_device, bench = sys.argv[1:6]
stages = []
with open(os.path.join(out, 'stages.tsv')) as f:
  for line in f:
    name, rc, seconds, cmd = line.rstrip('\n').split('\t', 3)
    stages.append({'stage': name, 'ok': rc == '0', 'exit_code': int(rc),
                   'seconds': int(seconds), 'command': cmd})
def probe(code):
  try:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120).stdout.strip()
  except Exception:  # pylint: disable=broad-except
    return ''
device = probe('import jax; d = jax.devices()[0]; print(d.platform + ":" + '
               'getattr(d, "device_kind", d.platform))')
result = {'date': datetime.datetime.now().isoformat(timespec='seconds'), 'mode': mode,
          'jax_backend': backend, 'device': device, 'torch_device': torch_device,
          'jax': probe('import jax; print(jax.__version__)'),
          'torch': probe('import torch; print(torch.__version__)'),
          'python': platform.python_version(), 'benchmark_module': bench,
          'ok': all(s['ok'] for s in stages), 'stages': stages}
runs = os.path.join(out, 'runs.json')
if os.path.exists(runs):
  result['runs'] = json.load(open(runs))
with open(os.path.join(out, 'gpu_check.json'), 'w') as f:
  json.dump(result, f, indent=2)
lines = [f'# GPU check ({mode} settings), {result["date"]}', '',
         f'Device: {device or backend}; JAX {result["jax"]}; torch '
         f'{result["torch"] or "not installed"} ({torch_device}).', '',
         '| stage | ok | seconds |', '|---|---|---|']
lines += [f'| {s["stage"]} | {"yes" if s["ok"] else "NO (exit %d)" % s["exit_code"]} | '
          f'{s["seconds"]} |' for s in stages]
if 'runs' in result:
  lines += ['', '| method (2-step run) | deterministic | steps |', '|---|---|---|']
  lines += [f'| {m} | {r["deterministic"]} | {r["steps"]} |' for m, r in result['runs'].items()]
for md in sorted(glob.glob(os.path.join(out, 'bench_*.md'))):
  lines += ['', f'## {os.path.basename(md)[:-3]}', '', open(md).read().strip()]
with open(os.path.join(out, 'gpu_check.md'), 'w') as f:
  f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))
EOF
rm -f "$stages"
verdict=FAILED
[ $status -eq 0 ] && verdict=ok
echo "gpu_check: $verdict in ${SECONDS}s; see $out/gpu_check.md"
exit $status
