"""Runs `train_and_evaluate` in a child process, optionally killing itself.

Used by the trainer tests for real SIGKILLs:
  python tests/run_child.py WORKDIR '{"method": "mwnet"}' [--kill-after-step N]
                            [--kill-in-save N]
--kill-after-step N: SIGKILL right after step N finished (work since the last
  checkpoint is lost, as in a real crash).
--kill-in-save N: SIGKILL inside the checkpoint save of step N, after its
  files are written and before Orbax commits them.
Prints the summary as JSON on the last line.
"""

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from famus_jax.presets import tiny  # pylint: disable=wrong-import-position
from famus_jax.train import trainer  # pylint: disable=wrong-import-position


def _kill():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('workdir')
  parser.add_argument('overrides')
  parser.add_argument('--kill-after-step', type=int, default=-1)
  parser.add_argument('--kill-in-save', type=int, default=-1)
  args = parser.parse_args()
  config = tiny.get_config()
  config.update_from_flattened_dict(json.loads(args.overrides))

  hooks = []
  if args.kill_after_step >= 0:

    class KillAfterStep(trainer.Hook):

      def after_step(self, run, step, result):
        if int(result.state.step) == args.kill_after_step:
          _kill()

    hooks.append(KillAfterStep())

  if args.kill_in_save >= 0:
    from orbax.checkpoint._src.path import atomicity  # pylint: disable=import-outside-toplevel
    saving = {'step': None}
    original_save = trainer.Checkpointer.save

    def save(self, step, state, progress):
      saving['step'] = step
      return original_save(self, step, state, progress)

    def killing_finalize(original_finalize):
      async def finalize(self, *a, **k):
        if saving['step'] == args.kill_in_save:
          _kill()
        return await original_finalize(self, *a, **k)
      return finalize

    trainer.Checkpointer.save = save
    for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
      cls.finalize = killing_finalize(cls.finalize)

  summary = trainer.train_and_evaluate(config, args.workdir, hooks)
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
