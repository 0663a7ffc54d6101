"""Makes the repository root importable (famus_jax, configs/*.py) under `pytest`, gives the
whole session one JAX compilation cache, and compiles at XLA's cheapest optimisation level.

The cache (a temporary directory, removed at the end) is shared by every test process: the
xdist workers and the child processes the tests start (killed-and-resumed runs, local
multi-process jobs, the installed console script) inherit it through the environment. Tests
compile the same small programs many times (the tiny config's step in each run); from the
second time on they are loaded. A loaded executable is the one that was compiled, so results
are the same bits. A test may still point its children at a cache of its own.

Compiling is most of the suite's time, and XLA's backend optimisation level 0 compiles in about
two thirds of the default's time (the programs compute the same things, more slowly). The
suite checks values against independent computations, not speed. To test at the default level,
set `--xla_backend_optimization_level` in XLA_FLAGS yourself; it is then left as it is.
"""

import os
import shutil
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

_CACHE_ENV = 'FAMUS_TEST_JAX_CACHE'  # set by the first process of the session (xdist: the controller)
_OWNED = []


def pytest_configure(config):
  del config
  if not os.environ.get(_CACHE_ENV):
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix='famus_jax_test_cache_')
    _OWNED.append(os.environ[_CACHE_ENV])
  cache = os.environ[_CACHE_ENV]
  flags = os.environ.get('XLA_FLAGS', '')
  if '--xla_backend_optimization_level' not in flags:
    os.environ['XLA_FLAGS'] = (flags + ' --xla_backend_optimization_level=0'
                               ' --xla_llvm_disable_expensive_passes=true').strip()
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', cache)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  if 'jax' in sys.modules:  # imported by a plugin before this hook: tell it directly
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


# The longest files (most compilation), longest first. `pytest -n 2 --dist loadfile` hands each
# worker whole files in collection order; a long file handed out last keeps one worker busy
# while the other idles, so they go first. The order inside a file is unchanged.
LONG_FILES = ('test_semi_supervised.py', 'test_multiprocess.py', 'test_famus.py', 'test_api.py',
              'test_fsr.py', 'test_meta_update_every.py', 'test_model_numerics.py',
              'test_trainer.py', 'test_faults.py', 'test_gpu_check.py')


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {name: i for i, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


def pytest_unconfigure(config):
  del config
  for directory in _OWNED:
    shutil.rmtree(directory, ignore_errors=True)
