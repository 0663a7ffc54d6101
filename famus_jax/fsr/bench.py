"""FSR's cost against ERM: step time (famus_jax.benchmark's protocol) and step memory.

  python -m famus_jax.fsr.bench --model=resnet32 --batch_size=100 \\
      --methods=erm,fsr,fsr_nomixup --steps=10

Time: `famus_jax.benchmark.benchmark` (same process, compile excluded,
interleaved timed rounds, median; ratio to ERM). Memory: XLA's own account of
the compiled training step (`Compiled.memory_analysis()`): arguments (the
train state and the batch), outputs, temporaries (activations kept for the
backward pass, workspaces), minus what donation aliases; peak = arguments +
outputs - aliased + temporaries. That is the device memory the step needs,
the quantity the FSR paper's GPU-memory comparison is about; process RSS on a
CPU would mostly measure the compiler and the host data.
"""

import argparse
import json
import sys

import jax

from famus_jax import benchmark as bm
from famus_jax.data import build_data
from famus_jax.train.trainer import Run, data_mesh


def step_memory(config) -> dict:
  """Bytes of the compiled training step of `config` (see module docstring)."""
  run = Run(config, build_data(config), data_mesh())
  state = run.init_state()
  batch = run.batch(0)
  compiled = run.step_fn(run.method.variant(None)).lower(state, batch).compile()
  m = compiled.memory_analysis()
  out = {'argument_bytes': int(m.argument_size_in_bytes), 'output_bytes': int(m.output_size_in_bytes),
         'alias_bytes': int(m.alias_size_in_bytes), 'temp_bytes': int(m.temp_size_in_bytes)}
  out['peak_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['alias_bytes']
                       + out['temp_bytes'])
  method_state = sum(x.nbytes for x in jax.tree.leaves(state.method_state))
  out['method_state_bytes'] = int(method_state)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet32', choices=sorted(bm.MODELS))
  parser.add_argument('--batch_size', type=int, default=100)
  parser.add_argument('--methods', default='erm,fsr,fsr_nomixup')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  methods = args.methods.split(',')
  log = lambda s: print(s, file=sys.stderr, flush=True)
  result = bm.benchmark(args.model, args.batch_size, methods, args.steps, log=log)
  for name in methods:
    config = bm.make_config(args.model, args.batch_size, 32, bm.METHODS[name], {})
    result['methods'][name]['memory'] = step_memory(config)
  erm = result['methods'].get('erm')
  rows = ['| method | step (s) | x ERM | peak step memory (MB) | x ERM | temporaries (MB) |',
          '|---|---|---|---|---|---|']
  for name, r in result['methods'].items():
    mem = r['memory']
    ratio = mem['peak_bytes'] / erm['memory']['peak_bytes'] if erm else float('nan')
    r['memory_ratio_to_erm'] = ratio
    rows.append(f'| {name} | {r["step_time_s"]:.3f} | {r["ratio_to_erm"] or float("nan"):.2f} | '
                f'{mem["peak_bytes"] / 2**20:.1f} | {ratio:.3f} | {mem["temp_bytes"] / 2**20:.1f} |')
  print(f'{args.model}, batch {args.batch_size}, {result["device"]}, median of {args.steps} steps')
  print('\n'.join(rows))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2, default=str)
  return result


if __name__ == '__main__':
  main()
