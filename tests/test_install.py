"""A plain (non-editable) install trains and runs every tool from outside the repository.

Builds the wheel from a copy of the source tree, installs it with `pip
install --no-deps --target` into a temporary directory (its dependencies come
from the test environment), and runs the README's entry points from another
directory with only that install on the path for famus_jax.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns('.git', '.venv', 'venv', 'runs', 'results', 'build', 'dist',
                              '*.egg-info', '__pycache__', '.pytest_cache')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(env, cwd, site): an environment whose famus_jax is the wheel installed in `site`."""
  tmp = tmp_path_factory.mktemp('install')
  src, wheels, site, cwd = tmp / 'src', tmp / 'wheels', tmp / 'site', tmp / 'elsewhere'
  shutil.copytree(ROOT, src, ignore=SKIP)
  pip = [sys.executable, '-m', 'pip', '-q']
  subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', str(wheels),
                        str(src)], check=True, capture_output=True)
  wheel = next(wheels.glob('famus_jax-*.whl'))
  subprocess.run(pip + ['install', '--no-deps', '--target', str(site), str(wheel)], check=True,
                 capture_output=True)
  cwd.mkdir()
  env = {**os.environ, 'PYTHONPATH': str(site)}
  return env, cwd, site


def run(installed, *args, timeout=300, ok=(0,)):
  """Output of a command run from outside the repo; `ok`: the accepted exit codes."""
  env, cwd, _ = installed
  proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  assert proc.returncode in ok, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc.stdout + proc.stderr


def test_the_installed_copy_is_imported(installed):
  _, _, site = installed
  out = run(installed, sys.executable, '-c', 'import famus_jax; print(famus_jax.__file__)')
  assert out.strip().startswith(str(site)), out
  assert not (installed[1] / 'configs').exists()


@pytest.mark.parametrize('module', ['famus_jax.tools.benchmark', 'famus_jax.tools.quality',
                                    'famus_jax.tools.report'])
def test_tools_help(installed, module):
  # absl exits with 0 or 1 after --help and lists the command's flags (--out for the report,
  # --config among the others').
  out = run(installed, sys.executable, '-m', module, '--help', ok=(0, 1))
  assert ('--out' in out) if module.endswith('report') else ('--config' in out), out


def test_console_script_trains_a_preset(installed):
  _, cwd, site = installed
  script = site / 'bin' / 'famus-train'
  assert 'preset name' in run(installed, sys.executable, str(script), '--help', ok=(0, 1))
  out = run(installed, sys.executable, str(script), '--config=tiny', '--workdir=w',
            '--config.num_steps=2', '--config.eval_every=2', '--config.method=mwnet')
  assert 'mwnet on synthetic' in out
  assert (cwd / 'w' / 'summary.json').exists()
