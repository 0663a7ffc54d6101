"""python -m famus_jax.tools.report PATH... --out=DIR: the report's command (absl flags).

  python -m famus_jax.tools.report runs/grid runs/quality bench.json --out=report_dir

Each PATH is a run workdir, a directory of run workdirs, a quality workdir or a benchmark
JSON file; report.md and the figures go to --out. The package docstring describes the report.
"""

from absl import app, flags

from famus_jax import cli
from famus_jax.tools.report import make_report


def define_flags() -> None:
  """The command's flags (defined when it runs, not when the package is imported)."""
  flags.DEFINE_string('out', None, 'Output directory for report.md and the figures (created).')
  flags.mark_flag_as_required('out')


def main(argv) -> None:
  """The report of the PATHs (absl's argv after the program name) in --out."""
  if len(argv) < 2:
    raise app.UsageError('give at least one PATH: a run workdir, a directory of run workdirs, '
                         'a quality workdir or a benchmark .json')
  make_report(argv[1:], flags.FLAGS.out)


if __name__ == '__main__':
  cli.run_tool(main, define_flags)
