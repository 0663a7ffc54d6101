"""Names and fixed facts of the supported data sets.

Everything here is a constant: allowed config values, class names, image shapes and the CIFAR-100
fine -> super-class assignment. Images are always NHWC uint8; labels are int32 class indices.
"""

import dataclasses

import numpy as np

# Data sets whose training labels carry real noise (data/real_noise.py): the CIFAR-N human
# annotations (cifar_n.py) and Controlled Noisy Web Labels, mini-ImageNet (cnwl.py).
REAL_NOISE_DATASETS = ('cifar10n', 'cifar100n', 'cnwl')
DATASETS = ('cifar10', 'cifar100', 'fashion_mnist', 'synthetic') + REAL_NOISE_DATASETS
# image_folder: image files on disk (Clothing1M, WebVision, root/<class>/*; image_folder.py),
# read by the sources list_file and class_folders.
DATASETS += ('image_folder',)
# arrays: in-memory arrays given to the Python API (famus_jax.fit / famus_jax.Learner), not loaded
# by `build_data`.
DATASETS += ('arrays',)
SOURCES = ('auto', 'tfds', 'idx', 'cifar_archive', 'synthetic', 'list_file', 'class_folders')
NOISE_TYPES = ('none', 'symmetric', 'asymmetric')

# Default location of Debian's `dataset-fashion-mnist` package (IDX files).
DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

CIFAR10_CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer',
    'dog', 'frog', 'horse', 'ship', 'truck')

FASHION_MNIST_CLASSES = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
    'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')

# CIFAR-100 fine labels, index = label (alphabetical, as in the official meta).
CIFAR100_CLASSES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle',
    'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel',
    'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
    'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster',
    'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
    'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree',
    'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy',
    'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
    'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail',
    'snake', 'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper',
    'table', 'tank', 'telephone', 'television', 'tiger', 'tractor', 'train',
    'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf',
    'woman', 'worm')

# CIFAR-100 super-classes (coarse labels, index = coarse label) with the fine labels that belong to
# each (5 per super-class).
_CIFAR100_SUPERCLASS_MEMBERS = (
    ('aquatic_mammals', (4, 30, 55, 72, 95)),
    ('fish', (1, 32, 67, 73, 91)),
    ('flowers', (54, 62, 70, 82, 92)),
    ('food_containers', (9, 10, 16, 28, 61)),
    ('fruit_and_vegetables', (0, 51, 53, 57, 83)),
    ('household_electrical_devices', (22, 39, 40, 86, 87)),
    ('household_furniture', (5, 20, 25, 84, 94)),
    ('insects', (6, 7, 14, 18, 24)),
    ('large_carnivores', (3, 42, 43, 88, 97)),
    ('large_man-made_outdoor_things', (12, 17, 37, 68, 76)),
    ('large_natural_outdoor_scenes', (23, 33, 49, 60, 71)),
    ('large_omnivores_and_herbivores', (15, 19, 21, 31, 38)),
    ('medium_mammals', (34, 63, 64, 66, 75)),
    ('non-insect_invertebrates', (26, 45, 77, 79, 99)),
    ('people', (2, 11, 35, 46, 98)),
    ('reptiles', (27, 29, 44, 78, 93)),
    ('small_mammals', (36, 50, 65, 74, 80)),
    ('trees', (47, 52, 56, 59, 96)),
    ('vehicles_1', (8, 13, 48, 58, 90)),
    ('vehicles_2', (41, 69, 81, 85, 89)),
)

CIFAR100_COARSE_CLASSES = tuple(name for name, _ in _CIFAR100_SUPERCLASS_MEMBERS)


def _fine_to_coarse_table() -> np.ndarray:
  table = np.full((100,), -1, dtype=np.int32)
  for coarse, (_, fine) in enumerate(_CIFAR100_SUPERCLASS_MEMBERS):
    table[list(fine)] = coarse
  assert (table >= 0).all(), 'every CIFAR-100 fine class needs a super-class'
  table.setflags(write=False)
  return table


# (100,) int32: CIFAR100_FINE_TO_COARSE[fine_label] = coarse_label.
CIFAR100_FINE_TO_COARSE = _fine_to_coarse_table()


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Fixed facts of a real data set.

  num_classes: number of (fine) classes.
  image_shape: (H, W, C) of one image.
  tfds_name: name of the TFDS builder.
  class_names: class names indexed by label.
  num_train / num_test: sizes of the official splits.
  """
  num_classes: int
  image_shape: tuple[int, int, int]
  tfds_name: str
  class_names: tuple[str, ...]
  num_train: int
  num_test: int


DATASET_SPECS = {
    'cifar10': DatasetSpec(10, (32, 32, 3), 'cifar10', CIFAR10_CLASSES,
                           50000, 10000),
    'cifar100': DatasetSpec(100, (32, 32, 3), 'cifar100', CIFAR100_CLASSES,
                            50000, 10000),
    'fashion_mnist': DatasetSpec(10, (28, 28, 1), 'fashion_mnist',
                                 FASHION_MNIST_CLASSES, 60000, 10000),
    'cifar10n': DatasetSpec(10, (32, 32, 3), 'cifar10_n', CIFAR10_CLASSES, 50000, 10000),
    'cifar100n': DatasetSpec(100, (32, 32, 3), 'cifar100_n', CIFAR100_CLASSES, 50000, 10000),
    # CNWL stores 84x84 images (config.cnwl.image_size resizes them); TFDS names no classes,
    # so they are named by index. Its clean validation split is the test set.
    'cnwl': DatasetSpec(100, (84, 84, 3), 'controlled_noisy_web_labels',
                        tuple(f'class_{i}' for i in range(100)), 50000, 5000),
}
