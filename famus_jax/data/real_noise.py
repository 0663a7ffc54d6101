"""Data sets whose training labels carry real noise: CIFAR-10N, CIFAR-100N and CNWL.

The data sets themselves are in cifar_n.py and cnwl.py; what they share with each other, and how
they differ from the data sets with synthetic noise (data/pipeline.py), is here:

- The given labels are the training labels (`RawData.train_noisy_labels`). The clean labels,
  where known, are kept for diagnostics only (`DataSplits.train_clean_labels`, -1 where unknown:
  a CNWL example flagged not clean), so is_noisy = given != clean and data_info.json reports the
  realised noise rate with the label set.
- Synthetic noise and long-tail subsampling are refused with a ConfigError: noise_type must be
  'none' (noise_rate is then ignored, as for every data set) and imbalance_factor 1.
- Clean meta images: none unless asked for. By default num_meta must be 0 (methods erm and fsr,
  or meta_set='pseudo_clean', which needs no clean data). With clean_meta_from_train=True (CIFAR-N
  only, where every training image has its clean label) the num_meta meta images are training
  images with their CLEAN labels, class-balanced and removed from training: MW-Net's protocol
  carried over. The test sets (CIFAR's, CNWL's clean validation split) are never used for it.
- A class-balanced `train_subset` is balanced by the given labels (the clean ones may be unknown).
"""

from typing import Any

from famus_jax.data import cifar_n
from famus_jax.data import cnwl
from famus_jax.data import datasets
from famus_jax.data import sources
from famus_jax.errors import ConfigError

ALL_LABEL_SETS = tuple(dict.fromkeys(s for sets in cifar_n.LABEL_SETS.values() for s in sets))
# The clean label of a training example whose true class the data set does not know.
UNKNOWN_CLEAN = cnwl.UNKNOWN


def check_config(config: Any) -> None:
  """ConfigError naming the first invalid real-noise field (the module docstring's rules)."""
  if config.noisy_label_set not in ALL_LABEL_SETS:
    raise ConfigError(f'config.noisy_label_set={config.noisy_label_set!r} is not one of '
                      f'{list(ALL_LABEL_SETS)}')
  if not isinstance(config.clean_meta_from_train, bool):
    raise ConfigError(f'config.clean_meta_from_train={config.clean_meta_from_train!r} is not one '
                      'of [False, True]')
  cnwl.check_config(config)
  dataset = config.dataset
  if dataset not in datasets.REAL_NOISE_DATASETS:
    return
  sources.check_dataset_and_source(dataset, config.data_source)
  if config.noise_type != 'none':
    raise ConfigError(f'config.noise_type={config.noise_type!r} adds synthetic noise, but '
                      f'dataset={dataset!r} comes with real label noise: set '
                      "config.noise_type='none'")
  if config.imbalance_factor != 1:
    raise ConfigError(f'config.imbalance_factor={config.imbalance_factor!r}: long-tailed '
                      f'subsampling is for clean data sets; dataset={dataset!r} takes 1.0')
  if config.num_meta and not config.clean_meta_from_train:
    raise ConfigError(
        f'config.num_meta={config.num_meta} asks for clean meta images, but the training labels '
        f'of dataset={dataset!r} are the noisy ones: set config.clean_meta_from_train=True to '
        'take the meta images from the training set with their CLEAN labels (MW-Net\'s '
        "protocol), or config.num_meta=0 (methods erm / fsr, or config.meta_set='pseudo_clean')")
  if dataset in cifar_n.DATASETS:
    cifar_n.check_config(config)
    return
  if config.noisy_label_file:
    raise ConfigError(f'config.noisy_label_file={config.noisy_label_file!r} is for cifar10n / '
                      f'cifar100n; dataset={dataset!r} has its labels in the TFDS copy')
  if config.clean_meta_from_train:
    raise ConfigError(f'config.clean_meta_from_train=True needs the clean label of every '
                      f'training image, which dataset={dataset!r} does not have (only a flag '
                      'per image): set it to False, with num_meta=0')


def load_real_noise(config: Any) -> sources.RawData:
  """The `RawData` of a real-noise `config.dataset` (train_noisy_labels set; see above)."""
  if config.dataset in cifar_n.DATASETS:
    return cifar_n.load_cifar_n(config.dataset, config.data_source, config.data_dir,
                                config.noisy_label_set, config.noisy_label_file,
                                download=config.download, url=config.cifar_url)
  c = config.cnwl
  return cnwl.load_cnwl(config.data_source, config.data_dir, c.color, c.noise_level,
                        c.image_size)


def info(config: Any) -> dict[str, Any]:
  """The real-noise settings for data_info.json: which labels training saw."""
  if config.dataset in cifar_n.DATASETS:
    labels = {'noisy_label_set': config.noisy_label_set}
  else:
    labels = {'cnwl_color': config.cnwl.color, 'cnwl_noise_level': float(config.cnwl.noise_level),
              'image_size': int(config.cnwl.image_size)}
  return {**labels, 'clean_meta_from_train': bool(config.clean_meta_from_train)}
