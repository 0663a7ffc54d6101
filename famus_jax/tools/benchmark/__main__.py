"""python -m famus_jax.tools.benchmark: the step-time benchmark's command (absl flags).

  python -m famus_jax.tools.benchmark --model=resnet32 --batch_size=100 \\
      --methods=erm,mwnet,famus,famus_static --steps=5 --out=bench.json \\
      --config.famus.candidates=all

`--config.FIELD=VALUE`: a schema field (famus_jax/config.py) for every method, typed as the
schema declares it. The package docstring describes the protocol.
"""

import json
import os
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np

from famus_jax import cli
from famus_jax import config as base_config
from famus_jax.provenance import provenance
from famus_jax.tools import xla_trace
from famus_jax.tools.benchmark import measurement, specs, tables


def define_flags() -> None:
  """The command's flags (defined when it runs, not when the package is imported)."""
  flags.DEFINE_enum('model', 'resnet32', sorted(specs.MODELS), 'The network.')
  flags.DEFINE_integer('batch_size', 100, 'Training, meta and reward batch size.')
  flags.DEFINE_integer('image_size', 32, 'Side of the random square images.')
  flags.DEFINE_list('methods', ['erm', 'mwnet', 'famus', 'famus_static'],
                    f'Benchmark variants, from {sorted(specs.method_specs())}.')
  flags.DEFINE_integer('steps', 10, 'Timed steps per method.')
  flags.DEFINE_integer('settle_steps', None,
                       'Override the settling steps of the methods that settle.')
  flags.DEFINE_bool('peak_memory', False,
                    "Also measure each method's peak memory in a fresh child process.")
  flags.DEFINE_string('out', '', 'Write the results as JSON here (and the table as .md).')
  flags.DEFINE_bool('memory_only', False,
                    'Only compile each step and report its XLA memory (no timing).')
  flags.DEFINE_list('peers', [], "'torch': also time the PyTorch peer of each method in the "
                    'same rounds (needs the [peers] extra).')
  flags.DEFINE_integer('threads', 1, 'Threads of the PyTorch peer (pin with taskset).')
  flags.DEFINE_bool('trace', False, 'Also record XLA:CPU time per instruction of 2 more steps '
                    'per method and print it by category.')
  flags.DEFINE_string('memory_child', '', 'Internal: one peak-memory measurement (JSON).')
  config_flags.DEFINE_config_dict('config', base_config.get_config(),
                                  'Schema overrides for every method: --config.FIELD=VALUE.',
                                  lock_config=True)


def write(result: dict, path: str, traced: bool) -> None:
  """The results as JSON at `path` and the tables as Markdown beside it (.md), with the
  provenance of the measurement (version, commit, date, command, JAX, devices)."""
  result = {**result, 'provenance': provenance()}
  with open(path, 'w') as f:
    json.dump(result, f, indent=2, default=lambda o: np.asarray(o).tolist())
  with open(os.path.splitext(path)[0] + '.md', 'w') as f:
    f.write(tables.title(result) + '\n\n' + tables.table(result) + '\n')
    f.write('\n' + tables.provenance_line(result['provenance']) + '\n')
    if traced:
      f.write('\n' + tables.trace_table(result) + '\n')


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if f.trace:  # read when JAX starts its backend, i.e. at the first computation below
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                               + f' --{xla_trace.TRACEME_OPTION}=true').strip()
  if f.memory_child:
    measurement.memory_child(f.memory_child)
    return
  log = lambda s: print(s, file=sys.stderr, flush=True)  # pylint: disable=g-long-lambda
  extra = dict(config_flags.get_override_values(f['config']))
  try:
    if f.memory_only:
      result = measurement.memory_only(f.model, f.batch_size, f.methods, f.image_size, extra,
                                       log=log)
    else:
      result = measurement.benchmark(f.model, f.batch_size, f.methods, f.steps, f.image_size,
                                     f.settle_steps, extra, log=log,
                                     peak_memory=f.peak_memory, peers=f.peers,
                                     threads=f.threads, trace=f.trace)
  except ValueError as e:  # an unknown method, named
    sys.exit(f'error: {e}')
  print(tables.title(result))
  print(tables.table(result))
  if f.trace:
    print('\n' + tables.trace_table(result))
  if f.out:
    write(result, f.out, f.trace)


if __name__ == '__main__':
  cli.run_tool(main, define_flags)
