"""python -m famus_jax.tools.torch_peer: the PyTorch peer's steps timed alone (absl flags).

  python -m famus_jax.tools.torch_peer --model=resnet32 --methods=erm,mwnet --steps=5

Prints each method's median step and then all results as one JSON line. The benchmark times
the peer beside famus_jax's steps (`python -m famus_jax.tools.benchmark --peers=torch`).
"""

import json

from absl import app, flags
import numpy as np

from famus_jax.tools.torch_peer import METHODS, make_peer


def define_flags() -> None:
  """The command's flags (defined when it runs, not when the package is imported)."""
  flags.DEFINE_string('model', 'resnet32', 'The network (torch_peer_nets.create_model).')
  flags.DEFINE_integer('batch_size', 100, 'Training and meta batch size.')
  flags.DEFINE_integer('image_size', 32, 'Side of the random square images.')
  flags.DEFINE_list('methods', ['erm', 'mwnet'], f'From {list(METHODS)}.')
  flags.DEFINE_integer('steps', 5, 'Timed steps per method.')
  flags.DEFINE_integer('threads', 1, 'torch threads.')
  flags.DEFINE_string('device', None, "'cpu' or 'cuda' (default: cuda when available).")


def main(argv) -> None:
  """Each method of --methods: a warm-up step, then --steps timed steps."""
  del argv
  f = flags.FLAGS
  out = {}
  for method in f.methods:
    peer = make_peer(f.model, f.batch_size, f.image_size, method, f.threads, device=f.device)
    peer.step()   # warm-up (allocations, cudnn autotuning)
    times, cpus = [], []
    for _ in range(f.steps):
      times.append(peer.step())
      cpus.append(peer.last_cpu_s)
    out[method] = {'step_time_s': float(np.median(times)), 'cpu_time_s': float(np.median(cpus)),
                   'times_s': times, **peer.describe()}
    print(f'{method}: {out[method]["step_time_s"]:.3f} s (median of {f.steps})', flush=True)
  print(json.dumps(out))


if __name__ == '__main__':
  define_flags()
  app.run(main)
