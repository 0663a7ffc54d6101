"""Step-time benchmark of the production training step, method against method.

  python -m famus_jax.tools.benchmark --model=resnet32 --batch_size=100 \\
      --methods=erm,mwnet,famus,famus_static --out=bench.json

Every method runs the real trainer pieces (`train.trainer.Run`: the jitted
`make_train_step`, `Run.run_step` with FaMUS's speculative re-runs, whose
`StepResult.reruns` is counted) on the synthetic source at CIFAR shape
(32x32x3 uint8, 10 classes). Protocol (docs/design.md, "Measuring speed"):

  1. per method: build the run, optionally a settling run (`settle_steps`,
     e.g. FaMUS's samplers), then steps until one runs without compiling;
  2. timed rounds, interleaved: each round times one step of every method in
     turn (wall clock around `run_step` + `block_until_ready`, and the
     process's CPU time), so that load from other processes on the machine
     hits all methods alike; a step that compiled a new variant is not
     counted (its time goes to `compile_time_s`);
  3. per method the median step time over the timed steps and its ratio to
     ERM's median from the same run (wall and CPU);
  4. memory, per method: XLA's buffer assignment of the compiled step
     (arguments + outputs + temporaries - donated aliases, `xla_step_bytes`:
     what the step needs on the device, the same on every backend), and with
     `--peak_memory` a fresh child process per method that runs a few steps
     and reports the device's `peak_bytes_in_use` where the backend keeps
     memory statistics (GPU), else the process's resident set size sampled
     every 2 ms during the steps (`peak_rss_bytes`; on CPU this includes the
     runtime, the data and the compiled code, so ratios are diluted).

Methods are the benchmark variants of `famus_jax.catalogue` (name -> config
overrides, settling steps, and optionally the layers the learned samplers of
another variant settled on: 'famus_static' holds those of 'famus'). Add a
variant to a method's catalogue entry (or a network to `specs.MODELS`) to
benchmark it. `--config.FIELD=VALUE` overrides a field of the schema
(famus_jax/config.py) for every method, after the variant's own overrides.

Modules: `specs` (the variants, networks and configs), `measurement` (the
protocol, memory, traces, the PyTorch peer's rounds), `tables` (Markdown),
`__main__` (the command's flags). The parts of a meta step timed as separate
functions: `python scripts/profile_backward.py --sections parts`.

`--trace` (CPU) records XLA:CPU's own time per instruction of two
more production steps of every method (`famus_jax/tools/xla_trace.py`) and
prints them by category (conv forward / dX / dW, BatchNorm, transposes, ...):
where one method's step spends what another's does not. The tracing option
applies to every compile of the process, so a `--trace` run's step times
may carry its overhead (the title says so): take times from a run without it.
"""

from famus_jax.tools.benchmark.measurement import Timed, benchmark, device_name, famus_summary
from famus_jax.tools.benchmark.measurement import measure_peak_memory, memory_only
from famus_jax.tools.benchmark.measurement import peak_memory_in_child, xla_step_memory
from famus_jax.tools.benchmark.specs import MODELS, MethodSpec, make_config, method_spec
from famus_jax.tools.benchmark.specs import method_specs, peer_method, step_form
from famus_jax.tools.benchmark.tables import amortised_note, markdown_table, memory_table
from famus_jax.tools.benchmark.tables import peer_table, table
from famus_jax.tools.benchmark.tables import title, trace_table
