"""Command-line entry points: `famus-train` (= `python main.py`) and the shared flags.

  famus-train --config=configs/cifar10.py --workdir=runs/cifar10 --config.method=famus
  famus-train --config=tiny --workdir=/tmp/tiny        # a preset by name

`--config` takes a config file (any `get_config()` module) or the name of a
preset shipped in famus_jax/presets, so an installed package trains from any
directory. Every field can be overridden with `--config.field=value`.
"""

import difflib
import functools
import os
import re
import sys
import traceback
from typing import Sequence

from absl import app, flags, logging
from flax import traverse_util
from ml_collections import config_flags

from famus_jax import config as base_config
from famus_jax import config_check, errors, presets
from famus_jax.train import distributed
from famus_jax.train.trainer import train_and_evaluate


def resolve_config_arg(argv: list) -> list:
  """argv with `--config=NAME` (a preset name, not a file) replaced by the preset's path.

  A value that names an existing file, or carries a ':' argument suffix of a
  file, is left as it is; an unknown name that is not a file either raises
  ValueError listing the presets.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith('--config='):
      prefix, value = '--config=', arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(out):
      prefix, value, i = '', out[i + 1], i + 1
    else:
      continue
    path = value.split(':', 1)[0]
    if os.path.exists(path) or path.endswith('.py'):
      return out
    out[i] = prefix + presets.preset_path(value)
    return out
  return out


def define_run_flags(workdir_default=None) -> None:
  """--config (file or preset) and --workdir, as every run-like tool takes them."""
  config_flags.DEFINE_config_file(
      'config', None, f'A config file (e.g. configs/cifar10.py) or a preset name: '
      f'{", ".join(presets.preset_names())}.', lock_config=True)
  flags.DEFINE_string('workdir', workdir_default,
                      'Directory for checkpoints, metrics.jsonl and summary.json.')
  flags.mark_flags_as_required(['config'])
  for name in ('config', 'workdir'):  # shown by --help of the script that runs (absl's main)
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def unknown_override(argv: list, error: Exception) -> str:
  """One line naming the `--config.FIELD` override of `argv` that names no field of the schema.

  `error`: what ml_collections raised for it (a KeyError or AttributeError holding the key).
  """
  found = re.search(r'\w+', str(error))
  key = found.group() if found else ''
  fields = traverse_util.flatten_dict(base_config.get_config().to_dict(), sep='.')
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    field = arg[len('--config.'):].partition('=')[0]
    if key in field.split('.') and field not in fields:
      close = difflib.get_close_matches(field, fields, n=3)
      hint = f'; did you mean {", ".join(close)}?' if close else ' (famus_jax/config.py lists them)'
      return f'--config.{field}: the config has no field {field!r}{hint}'
  return f'a --config override names no field of the config ({key!r})'


def none_overrides(argv: list) -> tuple:
  """(argv without its `--config.FIELD=None` overrides, those fields).

  ml_collections parses an override with the type of the field's value, so None is set after
  parsing (`set_none`); only the schema's `NULLABLE` fields take it, any other is one line
  naming them.
  """
  keep, fields = [], []
  for arg in argv:
    found = re.fullmatch(r'--config\.([\w.]+)=None', arg)
    if found is None:
      keep.append(arg)
    elif found.group(1) in base_config.NULLABLE:
      fields.append(found.group(1))
    else:
      sys.exit(f'error: --config.{found.group(1)}=None: only these fields take None: '
               f'{", ".join(base_config.NULLABLE)}')
  return keep, fields


def set_none(fields: list) -> None:
  """Sets each dotted field of the parsed --config to None (a command without --config
  refuses it)."""
  if fields and 'config' not in flags.FLAGS:
    sys.exit(f'error: --config.{fields[0]}=None: this command takes no --config')
  for field in fields:
    *groups, name = field.split('.')
    node = flags.FLAGS.config
    for group in groups:
      node = node[group]
    node[name] = None


def parse_flags(argv: list, nulls: Sequence[str] = ()) -> list:
  """absl's flag parsing, with an override of a field the config lacks as one line, and
  `--config.FIELD=None` for the fields that take None (`nulls`: those already taken out of
  argv)."""
  argv, more = none_overrides(argv)
  try:
    rest = app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # ml_collections' error for an unknown field
    sys.exit(f'error: {unknown_override(argv, e)}')
  set_none([*nulls, *more])
  return rest


def check_workdir(workdir: str) -> None:
  """ConfigError when `workdir`, or the nearest of its parents that exists, is not a directory."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    what = 'is' if path == os.path.abspath(workdir) else f'lies under {path}, which is'
    raise errors.ConfigError(f'--workdir={workdir} {what} a file, not a directory: give a '
                             'directory path')


def default_workdir(config) -> str:
  return f'runs/{config.dataset}_{config.method}'


def print_summary(summary: dict, workdir: str) -> None:
  print(f'{summary["method"]} on {summary["dataset"]}: best test accuracy '
        f'{summary["best_test_accuracy"]:.4f}, last {summary["last_test_accuracy"]:.4f}, '
        f'{summary["steps"]} steps, mean step {summary["mean_step_time_s"] or 0:.4f}s; '
        f'summary in {workdir}/summary.json')


# Errors whose message says what is wrong and what to do: printed as one line, no traceback.
USER_ERRORS = (errors.ConfigError, errors.DataNotFoundError, errors.NonFiniteLossError,
               errors.WorkdirMismatchError, errors.CheckpointDamagedError,
               errors.CheckpointSaveError, errors.WorkdirLockedError, errors.DistributedError)


def _train_main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or default_workdir(config)
  try:
    check_workdir(workdir)
    config_check.validate(config)
    summary = train_and_evaluate(config, workdir)
  except USER_ERRORS as e:
    distributed.exit_now(f'error ({type(e).__name__}): {e}')
  except BaseException:  # pylint: disable=broad-except
    if distributed.in_job():  # a traceback, then stop at once (see distributed.exit_now)
      distributed.exit_now(traceback.format_exc().rstrip())
    raise
  if distributed.is_primary():
    print_summary(summary, workdir)


def run_app(main_fn, workdir_default=None) -> None:
  """Define the run flags, resolve a preset name in argv and run `main_fn` under absl."""
  define_run_flags(workdir_default)
  try:
    argv = resolve_config_arg(sys.argv)
  except ValueError as e:
    sys.exit(f'error: {e}')
  app.run(main_fn, argv=argv, flags_parser=parse_flags)


def run_tool(main_fn, define_flags) -> None:
  """Define a tool's flags (`define_flags()`) and run `main_fn` under absl.

  An override of a field the config lacks ends in one line, also where the definition itself
  parses the overrides (`config_flags.DEFINE_config_dict` reads them from sys.argv at once).
  """
  sys.argv, nulls = none_overrides(sys.argv)  # before a definition that reads sys.argv
  try:
    define_flags()
  except (AttributeError, KeyError) as e:
    sys.exit(f'error: {unknown_override(sys.argv, e)}')
  app.run(main_fn, flags_parser=functools.partial(parse_flags, nulls=nulls))


def train() -> None:
  """The `famus-train` console script."""
  run_app(_train_main)
