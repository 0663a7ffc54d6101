"""famus_jax.provenance: the record every result file carries (version, commit, date, command)."""

import datetime
import importlib.util
import io
import json
import pathlib
import shutil
import subprocess
import sys
import tarfile

import jax

from famus_jax import provenance as prov

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEYS = {'package_version', 'git_commit', 'git_dirty', 'date', 'command', 'python', 'jax',
        'jaxlib', 'devices', 'platform', 'cpu'}


def git_head():
  return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                        check=True).stdout.strip()


def test_keys_and_values():
  record = prov.provenance(['famus-train', '--config=tiny', '--workdir=/tmp/a b'])
  assert set(record) == KEYS
  assert record['command'] == "famus-train --config=tiny '--workdir=/tmp/a b'"
  assert record['jax'] == jax.__version__
  assert record['python'] == '.'.join(map(str, sys.version_info[:3]))
  assert record['devices'] and all(':' in d for d in record['devices'])
  assert record['package_version']
  when = datetime.datetime.fromisoformat(record['date'])
  assert when.utcoffset() == datetime.timedelta(0)
  json.dumps(record)  # stored as it is in JSON files


def test_command_defaults_to_sys_argv(monkeypatch):
  monkeypatch.setattr(sys, 'argv', ['main.py', '--config=tiny'])
  assert prov.provenance()['command'] == 'main.py --config=tiny'


def test_commit_is_the_checkouts_head():
  record = prov.provenance([])
  assert record['git_commit'] == git_head()
  assert isinstance(record['git_dirty'], bool)


def test_commit_does_not_depend_on_the_working_directory(tmp_path):
  """Run from a directory outside the repository, the commit is still the checkout's."""
  code = ('import json; from famus_jax.provenance import provenance; '
          'print(json.dumps(provenance()))')
  proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                        text=True, check=True,
                        env={'PYTHONPATH': str(ROOT), 'JAX_PLATFORMS': 'cpu',
                             'PATH': '/usr/bin:/bin'})
  record = json.loads(proc.stdout.strip().splitlines()[-1])
  assert record['git_commit'] == git_head()


def test_no_commit_outside_a_checkout(tmp_path):
  """A copy of the package that no git work tree tracks (an installed one) has no commit."""
  copy = tmp_path / 'famus_jax_copy'
  copy.mkdir()
  (copy / '__init__.py').write_text('')
  shutil.copy(ROOT / 'famus_jax' / 'provenance.py', copy / 'provenance.py')
  spec = importlib.util.spec_from_file_location('provenance_copy', copy / 'provenance.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  record = module.provenance(['x'])
  assert record['git_commit'] is None and record['git_dirty'] is None
  assert set(record) == KEYS


def test_a_git_archive_snapshot_names_its_commit(tmp_path):
  """`git archive` writes the commit into ARCHIVE_COMMIT (export-subst): a snapshot of the tree
  that experiments run from reports it; the checkout's own placeholder reports nothing."""
  assert prov.archive_commit(str(ROOT / 'famus_jax' / 'ARCHIVE_COMMIT')) is None
  archive = subprocess.run(['git', 'archive', 'HEAD', 'famus_jax/ARCHIVE_COMMIT'], cwd=ROOT,
                           capture_output=True, check=True).stdout
  with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    text = tar.extractfile('famus_jax/ARCHIVE_COMMIT').read().decode().strip()
  assert text == git_head()
  copy = tmp_path / 'famus_jax_copy'
  copy.mkdir()
  (copy / '__init__.py').write_text('')
  (copy / 'ARCHIVE_COMMIT').write_text(text + '\n')
  shutil.copy(ROOT / 'famus_jax' / 'provenance.py', copy / 'provenance.py')
  spec = importlib.util.spec_from_file_location('provenance_snapshot', copy / 'provenance.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  record = module.provenance(['x'])
  assert record['git_commit'] == git_head() and record['git_dirty'] is None


def test_cpu_model_reads_the_model_name_and_counts_the_cpus(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  block = 'processor\t: {}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\n'
  cpuinfo.write_text(''.join(block.format(i) for i in range(2)))
  assert prov.cpu_model(str(cpuinfo)) == 'Intel(R) Xeon(R) Processor x2'
  assert isinstance(prov.provenance()['cpu'], str)
