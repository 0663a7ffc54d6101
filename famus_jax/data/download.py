"""Fetching the official CIFAR archives over plain HTTP (no TensorFlow).

The archive is streamed with `urllib` into a temporary file next to its final place, checked (md5
for the official URL; a tar check for any other URL), then renamed atomically, so an interrupted
download never leaves a partial archive under the name the readers look for.
`cifar_archive.read_cifar` then reads it like any local copy.
"""

import hashlib
import os
import sys
import tarfile
import tempfile
import time
from typing import TextIO
import urllib.request

from famus_jax.data import cifar_archive

# dataset -> (official URL, md5 of the archive).
OFFICIAL_ARCHIVES = {
    'cifar10': ('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                'c58f30108f718f92721af3b95e74349a'),
    'cifar100': ('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
                 'eb9058c3a382ffc7106e4002c42a8d85'),
}

# Environment variable overriding the default download directory.
CACHE_ENV = 'FAMUS_JAX_DATA'

_CHUNK = 1 << 20  # Bytes per read.
_TIMEOUT_S = 60  # Socket timeout per connect / read.
_REPORT_EVERY_S = 0.5  # Seconds between progress updates.


def default_data_dir() -> str:
  """Where CIFAR is looked for and downloaded when `config.data_dir` is ''.

  That is $FAMUS_JAX_DATA if set, else ~/.cache/famus_jax.
  """
  return (os.environ.get(CACHE_ENV)
          or os.path.join(os.path.expanduser('~'), '.cache', 'famus_jax'))


def resolve_url(dataset: str, url: str = '') -> tuple[str, str | None]:
  """Returns (url to fetch, expected md5 or None when `url` is a custom one)."""
  official, md5 = OFFICIAL_ARCHIVES[dataset]
  if not url or url == official:
    return official, md5
  return url, None


def archive_path(dataset: str, directory: str) -> str:
  """Where the archive for `dataset` goes.

  That is `directory` itself if it names a `.tar.gz` file, else the official archive name inside
  `directory`.
  """
  if directory.endswith('.tar.gz'):
    return directory
  return os.path.join(directory, cifar_archive.ARCHIVE_LAYOUT[dataset][0])


def _progress(stream: TextIO, url: str, done: int, total: int | None,
              final: bool = False) -> None:
  mib = 1 << 20
  size = f'{done / mib:.1f}/{total / mib:.1f} MiB' if total else (
      f'{done / mib:.1f} MiB')
  percent = f' ({100 * done / total:.0f}%)' if total else ''
  stream.write(f'\rDownloading {url}: {size}{percent}'
               + ('\n' if final else ''))
  stream.flush()


def fetch_cifar(dataset: str, directory: str, url: str = '',
                stream: TextIO | None = None) -> str:
  """Downloads the CIFAR archive for `dataset` ('cifar10' or 'cifar100') into `directory`.

  `directory` is the target directory (created if needed), or the `.tar.gz` path; the result is
  the path of the archive (see `archive_path`). `url` is '' for the official URL (md5-checked), or
  any URL urllib opens (http, https, file) serving the same archive (not md5-checked). The one-line
  progress message goes to `stream` (default stderr).

  Raises OSError on network / file errors (urllib.error.URLError included), ValueError on a bad
  md5, a file that is not a tar archive, or an unknown URL scheme, and http.client.HTTPException on
  a broken HTTP response.
  """
  url, md5 = resolve_url(dataset, url)
  target = archive_path(dataset, directory)
  stream = stream or sys.stderr
  os.makedirs(os.path.dirname(target) or '.', exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + '.',
                             suffix='.part', dir=os.path.dirname(target) or '.')
  try:
    digest = hashlib.md5()
    with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(
        url, timeout=_TIMEOUT_S) as response:
      length = response.headers.get('Content-Length')
      total = int(length) if length and length.isdigit() else None
      done, last_report = 0, 0.0
      while chunk := response.read(_CHUNK):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if time.monotonic() - last_report >= _REPORT_EVERY_S:
          _progress(stream, url, done, total)
          last_report = time.monotonic()
      _progress(stream, url, done, total, final=True)
    if total is not None and done != total:
      raise ValueError(f'got {done} bytes of {total} from {url}')
    if md5 is not None and digest.hexdigest() != md5:
      raise ValueError(f'md5 of the download from {url} is '
                       f'{digest.hexdigest()}, expected {md5}')
    if md5 is None and not tarfile.is_tarfile(tmp):
      raise ValueError(f'{url} did not serve a tar archive')
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target
