"""XLA:CPU's own time per HLO instruction of a compiled function, grouped into categories.

`instruction_seconds(call, steps)` runs `call()` `steps` times under `jax.profiler.trace` and
reads the thunk events back (`jax.profiler.ProfileData`): {instruction name: seconds per
call}. XLA:CPU records one event per thunk only when the executable was compiled with the
debug option `xla_cpu_enable_xprof_traceme` (per compile: `jax.jit(..., compiler_options=
{'xla_cpu_enable_xprof_traceme': True})`, or for every compile of a process:
XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true set before JAX starts its backend).

`categorize(seconds, hlo_text, batch)` charges each instruction (a fusion counts as the
category of most of its ops) to one of: conv forward, conv input grads (dX), conv kernel
grads (dW), layout transposes/copies, head (dot), BatchNorm fwd/bwd, elementwise/other
fwd/bwd. The model's layer names (`..._bn`, `..._bn1`) mark BatchNorm; an op whose JAX name
holds `transpose(` belongs to a backward pass.

Used by `scripts/profile_backward.py` (whole models) and the benchmark's `--trace` (the
production step of each method).
"""

import collections
import glob
import re
import tempfile
from typing import Callable

import jax
from jax.profiler import ProfileData

TRACEME_OPTION = 'xla_cpu_enable_xprof_traceme'


def hlo_index(hlo_text: str) -> dict:
  """instruction name -> (shape text, JAX op names, contains a convolution) of the entry."""
  bodies = {m.group(1): m.group(2) for m in re.finditer(
      r'^%(\S+) \(.*?\n((?:.*\n)*?)\}', hlo_text, re.M)}
  entry = hlo_text[hlo_text.index('ENTRY'):]
  index = {}
  for line in entry.split('\n'):
    m = re.match(r'\s+(?:ROOT )?%(\S+) = (\S+) ', line)
    if not m:
      continue
    text = line
    called = re.search(r'calls=%([\w.\-]+)', line)
    if called and called.group(1) in bodies:
      text += bodies[called.group(1)]
    index[m.group(1)] = (m.group(2), re.findall(r'op_name="([^"]*)"', text),
                         ' convolution(' in text)
  return index


def category(name: str, info, batch: int) -> str:
  """The category of instruction `name` (`info`: its `hlo_index` entry) in a batch-`batch` step."""
  if info is None:
    return 'other (no HLO info)'
  shape, op_names, has_conv = info
  inside = re.search(r'\[([\d,]*)\]', shape)
  dims = [int(d) for d in inside.group(1).split(',') if d] if inside else []
  bwd = any('transpose(' in o for o in op_names)
  if has_conv:
    if len(dims) == 4 and dims[0] != batch:
      return 'conv kernel grads (dW)'
    return 'conv input grads (dX)' if bwd else 'conv forward'
  if 'transpose' in name or name.startswith('copy'):
    return 'layout transposes/copies (+ fused producers)'
  if name.startswith('dot') or 'dot_general' in ''.join(op_names[-1:]):
    return 'head (dot)'
  layers = [o.split('/')[-2] for o in op_names if '/' in o]
  kinds = collections.Counter(
      'BatchNorm' if re.search(r'(^|_)bn\d*$', layer) else 'elementwise/other'
      for layer in layers)
  kind = kinds.most_common(1)[0][0] if kinds else 'elementwise/other'
  return f'{kind} {"bwd" if bwd else "fwd"}'


def instruction_seconds(call: Callable[[], object], steps: int = 3) -> collections.Counter:
  """{HLO instruction: seconds per call} of `call()` (which must block until ready)."""
  call()
  per_instr = collections.Counter()
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(steps):
        call()
    data = ProfileData.from_file(glob.glob(d + '/**/*.xplane.pb', recursive=True)[0])
    for plane in data.planes:
      for line in plane.lines:
        if 'XLA' not in line.name:
          continue
        for ev in line.events:
          if not ev.name.startswith(('ThunkExecutor', 'end: ')):
            per_instr[ev.name] += ev.duration_ns / steps / 1e9
  return per_instr


def categorize(seconds: collections.Counter, hlo_text: str, batch: int) -> collections.Counter:
  """{category: seconds per call} from `instruction_seconds` and the executable's HLO text."""
  index = hlo_index(hlo_text)
  cats = collections.Counter()
  for name, t in seconds.items():
    cats[category(name, index.get(name), batch)] += t
  return cats
