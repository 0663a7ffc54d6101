"""Where a measurement comes from: package version, git commit, date, command, versions, devices.

`provenance()` returns a plain dict that result files (summary.json, benchmark JSON, the
quality summary, the report) can store as they are, so that every number can be traced to
the code and the machine that produced it:

  package_version  the installed famus_jax distribution's version ('unknown' without one)
  git_commit       `git rev-parse HEAD` of the checkout the imported package lives in; in a
                   tree exported by `git archive` (a snapshot an experiment runs from), the
                   commit git wrote into ARCHIVE_COMMIT (`export-subst` in .gitattributes);
                   else None (an installed copy)
  git_dirty        True when tracked files differ from that commit (None outside a checkout)
  date             the current time in UTC, ISO 8601, to the second
  command          the command line (sys.argv, or the `argv` given), shell-quoted
  python, jax, jaxlib  the versions
  devices          one '<platform>:<device kind>' string per device JAX sees
  platform         the operating system and CPU architecture (platform.platform())
  cpu              the host CPU's model and its logical CPU count, e.g. 'Intel(R) Xeon(R)
                   Processor x2' (`cpu_model()`; '' where /proc/cpuinfo names none): two
                   runs' times compare only on the same machine

It calls `jax.devices()`, so in a multi-process job call it after `jax.distributed` has
been initialised.
"""

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys

import jax
import jaxlib

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _git(*args):
  """Output of `git <args>` run in the package's directory, or None if git fails."""
  try:
    proc = subprocess.run(['git', *args], cwd=PACKAGE_DIR, capture_output=True, text=True,
                          timeout=10, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return proc.stdout.strip() if proc.returncode == 0 else None


def archive_commit(path: str = os.path.join(PACKAGE_DIR, 'ARCHIVE_COMMIT')):
  """The commit `git archive` substituted into ARCHIVE_COMMIT, or None (a checkout or an
  installed copy holds the unsubstituted placeholder, or no file)."""
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    return None
  return text if len(text) == 40 and all(c in '0123456789abcdef' for c in text) else None


def git_state():
  """(commit, dirty) of the checkout holding this package, or (None, None) outside one.

  A package installed into a virtual environment that itself sits inside some git work tree
  is not a checkout of famus_jax: the commit is reported only when the package's files are
  tracked there.
  """
  if _git('ls-files', '--error-unmatch', '__init__.py') is None:
    return archive_commit(), None
  commit = _git('rev-parse', 'HEAD')
  if commit is None:
    return None, None
  status = _git('status', '--porcelain', '--untracked-files=no')
  return commit, (None if status is None else bool(status))


def package_version():
  try:
    return importlib.metadata.version('famus_jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def _distribution_version(name, module):
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return getattr(module, '__version__', 'unknown')


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> str:
  """'<model name> x<logical CPUs>' from `cpuinfo` (Linux), else platform.processor(), else ''."""
  try:
    with open(cpuinfo) as f:
      models = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
  except OSError:
    models = []
  if models:
    return f'{models[0]} x{len(models)}'
  return platform.processor() or ''


def provenance(argv=None) -> dict:
  """The provenance record of a result produced now by this process (see the module doc)."""
  if argv is None:
    argv = sys.argv
  command = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
  commit, dirty = git_state()
  return {
      'package_version': package_version(),
      'git_commit': commit,
      'git_dirty': dirty,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'command': command,
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jaxlib': _distribution_version('jaxlib', jaxlib),
      'devices': [f'{d.platform}:{d.device_kind}' for d in jax.devices()],
      'platform': platform.platform(),
      'cpu': cpu_model(),
  }
