"""CNWL: Controlled Noisy Web Labels, mini-ImageNet red and blue (Jiang et al., ICML 2020).

Read from a prepared TFDS copy of `controlled_noisy_web_labels` without TensorFlow
(`sources.read_tfds`). Its builder configs are `mini_imagenet_red` (real web label noise: images
found by web search for a class name, some of another class) and `mini_imagenet_blue`
(synthetic noise: ImageNet images with flipped labels); `config.cnwl.color` picks one. Each has
ten training splits `train_00` .. `train_80`, one per noise level p in NOISE_LEVELS
(`config.cnwl.noise_level`: the fraction of the 50000 training images whose label is wrong), and
one clean `validation` split of 5000 images shared by all, which is the test set here. Images are
84x84; records carry 'label' (100 classes) and 'is_clean' (whether the label is the image's
true class).

Labels: the given label is the training label (`RawData.train_noisy_labels`). The clean label is
known only where is_clean (it is the given one) and is -1 elsewhere: a web image may belong to no
class of the set, and the copy does not keep a flipped image's true class. So is_noisy =
not is_clean, and the realised noise rate is the fraction not clean.

`config.cnwl.image_size` > 0 resizes every image on the host with Pillow's bilinear filter (which
averages over the shrunk footprint, as torchvision's Resize does): 32 is the FaMUS supplement's
setting (PreAct ResNet-18 on 32x32 mini-ImageNet).
"""

from typing import Any

import numpy as np

from famus_jax.data import datasets
from famus_jax.data import sources
from famus_jax.errors import ConfigError

DATASET = 'cnwl'
COLORS = ('red', 'blue')
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
TEST_SPLIT = 'validation'
HOMEPAGE = 'https://google.github.io/controlled-noisy-web-labels/index.html'
ANNOTATIONS_URL = 'https://storage.googleapis.com/cnlw/dataset_no_images.zip'
# Unknown clean label (an example flagged not clean).
UNKNOWN = -1


def tfds_name(color: str) -> str:
  """The TFDS builder with its config, e.g. 'controlled_noisy_web_labels/mini_imagenet_red'."""
  return f'{datasets.DATASET_SPECS[DATASET].tfds_name}/mini_imagenet_{color}'


def train_split(noise_level: float) -> str:
  """The training split of a noise level: 0.4 -> 'train_40'."""
  return f'train_{round(100 * noise_level):02d}'


def image_shape(config: Any) -> tuple[int, int, int]:
  """(H, W, C) of the images a run trains on: the stored 84x84, or cnwl.image_size square."""
  size = int(config.cnwl.image_size)
  stored = datasets.DATASET_SPECS[DATASET].image_shape
  return (size, size, stored[2]) if size else stored


def check_config(config: Any) -> None:
  """ConfigError naming the first invalid `config.cnwl` field."""
  c = config.cnwl
  if c.color not in COLORS:
    raise ConfigError(f'config.cnwl.color={c.color!r} is not one of {list(COLORS)}')
  if not any(abs(c.noise_level - level) < 1e-9 for level in NOISE_LEVELS):
    raise ConfigError(f'config.cnwl.noise_level={c.noise_level!r} is not one of the levels the '
                      f'TFDS copy has: {list(NOISE_LEVELS)}')
  if not isinstance(c.image_size, int) or c.image_size < 0:
    raise ConfigError(f'config.cnwl.image_size={c.image_size!r} must be an integer >= 0 (0 = the '
                      'stored 84x84; the FaMUS supplement uses 32)')


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, C) images resized to (N, size, size, C), Pillow's bilinear filter.

  When shrinking, the filter is a triangle stretched over the footprint of one output pixel
  (antialiased), so a linear ramp stays linear and a constant image constant.
  """
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('config.cnwl.image_size > 0 resizes with Pillow: pip install pillow') from e
  out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
  for i, image in enumerate(images):
    plane = image[..., 0] if image.shape[-1] == 1 else image
    resized = Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR)
    out[i] = np.asarray(resized).reshape(size, size, -1)
  return out


def how_to_provide(color: str) -> str:
  """What to download and where to put it, for the DataNotFoundError."""
  return '\n'.join([
      'How to provide the data (TFDS reads it without TensorFlow, but preparing it needs '
      'TensorFlow once):',
      f'  * into TFDS_DIR/downloads/manual/ put: dataset_no_images/ (extracted from '
      f'{ANNOTATIONS_URL}: mini-imagenet/split/, mini-imagenet-annotations.json), noisy_images/ '
      '(every web image that mini-imagenet-annotations.json lists, saved as <image/id>.jpg), and '
      'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (https://image-net.org/download-images)',
      f'  * then run `tfds build controlled_noisy_web_labels --config=mini_imagenet_{color} '
      '--file_format=array_record --data_dir=TFDS_DIR` and pass --config.data_dir=TFDS_DIR '
      f'(see {HOMEPAGE})'])


def _from_tfds(data_dir: str, color: str, noise_level: float,
               image_size: int) -> sources.RawData:
  name, split = tfds_name(color), train_split(noise_level)
  arrays = sources.read_tfds(name, (split, TEST_SPLIT), data_dir, extra_keys=('is_clean',))
  train, test = arrays[split], arrays[TEST_SPLIT]
  given = train['label']
  images = {'train': train['image'], 'test': test['image']}
  if image_size:
    images = {k: resize_images(v, image_size) for k, v in images.items()}
  spec = datasets.DATASET_SPECS[DATASET]
  clean = np.where(train['is_clean'] > 0, given, UNKNOWN).astype(np.int32)
  return sources.RawData(
      train_images=images['train'], train_labels=clean, train_noisy_labels=given,
      test_images=images['test'], test_labels=test['label'], num_classes=spec.num_classes,
      class_names=spec.class_names,
      description=f'tfds:{name} ({data_dir or "the TFDS default data_dir"}) {split}')


def load_cnwl(source: str, data_dir: str, color: str, noise_level: float,
              image_size: int = 0) -> sources.RawData:
  """Loads CNWL mini-ImageNet `color` at `noise_level` from a prepared TFDS copy.

  `source` is 'auto' or 'tfds' (the same: only TFDS serves CNWL), `data_dir` the TFDS data_dir
  ('' = TFDS's default) and `image_size` 0 (keep 84x84) or the side to resize to. The result is a
  `RawData`: images uint8 (N, S, S, 3), train_noisy_labels the given labels, train_labels the
  clean ones (-1 where not clean), the test set the clean validation split. Raises
  DataNotFoundError saying which manual-download files to put where when no copy is prepared,
  and DataCorruptError naming a damaged file of a copy.
  """
  attempts = [(f'tfds {tfds_name(color)} split {train_split(noise_level)} at '
               f'{data_dir or "TFDS default data_dir"}',
               lambda: _from_tfds(data_dir, color, noise_level, image_size))]
  return sources.load_first(DATASET, source, data_dir, attempts, how_to_provide(color))
