"""Train an image classifier on noisy / long-tailed data with sample re-weighting.

  python main.py --config=configs/cifar10.py --workdir=runs/cifar10 \
      --config.method=famus --config.noise_rate=0.6

The same as the installed `famus-train` command (famus_jax/cli.py). Running
the same command again resumes from the workdir's latest checkpoint.
"""

from famus_jax import cli

if __name__ == '__main__':
  cli.train()
