"""What a workdir holds, and whether this config may continue it: the checks before a run writes.

The trainer (`famus_jax.train.trainer.train_and_evaluate`) calls these under the workdir's
lock, before config.json, data_info.json or metrics.jsonl are touched:
`restore_matching` finds the newest intact checkpoint and compares the run fingerprint
(`famus_jax.train.checkpoint.run_fingerprint`) with the one it, or the workdir's records,
saved; `finished_summary` stops a rerun of a finished run; `quarantine_damaged` moves damaged
checkpoints aside; `write_run_records` writes config.json, data_info.json and
fingerprint.json.
"""

import json
import os
import sys
from typing import Optional

from famus_jax import catalogue
from famus_jax import config as schema
from famus_jax.errors import WorkdirMismatchError
from famus_jax.train.checkpoint import Checkpointer, config_fingerprint, fingerprint_differences
from famus_jax.train.logbook import write_json

FINGERPRINT_FILE = 'fingerprint.json'


def recorded_fingerprint(workdir: str) -> Optional[dict]:
  """The fingerprint the workdir's records (fingerprint.json, else config.json) hold, or None."""
  path = os.path.join(workdir, FINGERPRINT_FILE)
  try:
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    path = os.path.join(workdir, 'config.json')
    if os.path.exists(path):
      with open(path) as f:
        return {'config': config_fingerprint(json.load(f))}
  except (OSError, ValueError) as e:
    print(f'Warning: could not read {path} ({e}); it is not compared with this config',
          file=sys.stderr)
  return None


def mismatch_error(workdir: str, where: str, diffs: list, start_hint: str) -> Exception:
  def show(v):
    text = json.dumps(v)
    return text if len(text) <= 80 else text[:77] + '...'
  rows = '\n'.join(f'  {field}: {show(old)} -> {show(new)}' for field, old, new in diffs)
  return WorkdirMismatchError(
      f'{workdir} holds another run: {where} was made with a different config or data. '
      f'Nothing in the workdir was written. Differences (saved -> this config):\n{rows}\n'
      f'To proceed: use a new workdir for these settings, or rerun with '
      f'--config.resume=allow_changes to continue the saved run{start_hint} with the new '
      f'settings deliberately (e.g. more num_steps).')


def record_defaults_fingerprint() -> dict:
  """The fingerprint a record lacking a field is compared with: the schema's defaults, except
  for fields whose default changed since (`config.record_defaults`)."""
  return config_fingerprint(schema.record_defaults().to_dict())


def with_named_period(saved: dict) -> dict:
  """A saved fingerprint whose `meta.update_every` is the period the run trained with
  (`catalogue.update_every`), which is what the trainer records now: records written before
  stored the field as given (None: the method's own; a period given to a method without a
  meta model, which trains at every step)."""
  fields = saved.get('config') or {}
  if 'meta.update_every' not in fields:
    return saved
  period = catalogue.update_every(fields)
  if fields['meta.update_every'] == period:
    return saved
  return {**saved, 'config': {**fields, 'meta.update_every': period}}


def restore_matching(config, workdir: str, checkpointer: Checkpointer, template,
                      fingerprint: dict):
  """(found, changes): the newest intact checkpoint of this run, and the changes let through.

  found: `Checkpointer.restore_newest_intact`'s (step, state, record, damaged), or None when
  there is no intact checkpoint. changes: [(field, saved, new)] of the fingerprint, which only
  config.resume='allow_changes' accepts; otherwise a difference from the checkpoint's record
  (or, without a checkpoint, from the workdir's config.json) raises WorkdirMismatchError.
  """
  defaults = record_defaults_fingerprint()
  changes = []

  def check_record(step, record):
    saved = record.get('fingerprint') or recorded_fingerprint(workdir)
    if saved is None:
      return  # a checkpoint of an older version without any record: nothing to compare
    diffs = fingerprint_differences(with_named_period(saved), fingerprint, defaults)
    if diffs and config.resume != 'allow_changes':
      raise mismatch_error(workdir, f'its checkpoint at step {step}', diffs,
                            f' from step {step}')
    changes[:] = diffs

  found = checkpointer.restore_newest_intact(template, check_record)
  if found is None:
    saved = recorded_fingerprint(workdir)
    diffs = (fingerprint_differences(with_named_period(saved), fingerprint, defaults)
             if saved else [])
    if diffs and config.resume != 'allow_changes':
      raise mismatch_error(workdir, 'its config.json (no checkpoint yet)', diffs, '')
    changes[:] = diffs
  return found, changes


def finished_summary(workdir: str, checkpointer: Checkpointer, found, total_steps: int,
                      say) -> Optional[dict]:
  """The summary.json of a run that already trained every step (checkpointer closed), or None."""
  summary_path = os.path.join(workdir, 'summary.json')
  if found is None or found[0] < total_steps or not os.path.exists(summary_path):
    return None
  checkpointer.close()
  say(f'The run in {workdir} already finished ({found[0]} of {total_steps} steps): '
      f'nothing to train, {summary_path} is left as it is. To train further, pass a larger '
      f'num_steps with --config.resume=allow_changes, or use a new workdir.')
  with open(summary_path) as f:
    return json.load(f)


def quarantine_damaged(checkpointer: Checkpointer, found, say) -> list:
  """Moves aside the damaged checkpoints newer than the one restored; [(step, cause)]."""
  damaged = found[3] if found else []
  if damaged:
    moved = checkpointer.quarantine([s for s, _ in damaged])
    names = '; '.join(f'step {s} ({checkpointer.step_path(s)}): {cause}' for s, cause in damaged)
    say(f'Warning: damaged checkpoint skipped: {names}. Moved to {", ".join(moved)}; '
        f'resuming from step {found[0]}, the newest intact checkpoint.', file=sys.stderr)
  return damaged


def warn_of_changes(changes: list, say) -> None:
  if changes:
    say('Warning: --config.resume=allow_changes: continuing with changed settings: '
        + ', '.join(f'{f}: {json.dumps(o)} -> {json.dumps(n)}' for f, o, n in changes),
        file=sys.stderr)


def write_run_records(workdir: str, config, data, fingerprint: dict) -> None:
  """config.json, data_info.json and the run fingerprint (process 0)."""
  write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  write_json(os.path.join(workdir, 'data_info.json'), data.info)
  write_json(os.path.join(workdir, FINGERPRINT_FILE), fingerprint)
