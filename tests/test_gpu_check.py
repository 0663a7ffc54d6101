"""scripts/gpu_check.sh in its CPU mode: the GPU check must not rot between GPU loans."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_mode_runs_every_stage(tmp_path):
  env = {**os.environ, 'PYTHON': sys.executable}  # the test's interpreter, venv or not
  proc = subprocess.run(['bash', str(ROOT / 'scripts' / 'gpu_check.sh'), str(tmp_path), '--cpu'],
                        capture_output=True, text=True, timeout=900, check=False, env=env)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads((tmp_path / 'gpu_check.json').read_text())
  assert result['mode'] == 'cpu' and result['ok']
  assert {s['stage'] for s in result['stages']} >= {'pytest', 'runs', 'bench_resnet8'}
  assert all(r['deterministic'] for r in result['runs'].values())
  assert set(result['runs']) == {'erm', 'mwnet'}  # the GPU settings run every method
  assert (tmp_path / 'bench_resnet8.json').exists() and (tmp_path / 'gpu_check.md').exists()
