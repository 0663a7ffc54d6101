"""Train an image classifier on noisy / long-tailed data with sample re-weighting.

  python main.py --config=configs/cifar10.py --workdir=runs/cifar10 \
      --config.method=famus --config.noise_rate=0.6

Running the same command again resumes from the workdir's latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from famus_jax.train.trainer import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl and summary.json.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  workdir = FLAGS.workdir or f'runs/{FLAGS.config.dataset}_{FLAGS.config.method}'
  summary = train_and_evaluate(FLAGS.config, workdir)
  print(f'{summary["method"]} on {summary["dataset"]}: best test accuracy '
        f'{summary["best_test_accuracy"]:.4f}, last {summary["last_test_accuracy"]:.4f}, '
        f'{summary["steps"]} steps, mean step {summary["mean_step_time_s"] or 0:.4f}s; '
        f'summary in {workdir}/summary.json')


if __name__ == '__main__':
  app.run(main)
