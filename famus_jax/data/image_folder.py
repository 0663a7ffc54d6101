"""Image files on disk as a data source: list files (Clothing1M, WebVision) and class folders.

These sets do not fit in host memory (Clothing1M: 1M images), so nothing here holds the pixels of
a whole split. A split is an `ImageFiles`: an array-like of N images, shape (N, S, S, 3), dtype
uint8, holding only the image paths (and the list-file line of each). Indexing it with an int, a
slice or an int array decodes exactly those files with Pillow on the host (a thread pool of
config.image_folder.decode_threads), so every consumer that reads `data.train_images[idx]` (the
run's batches, evaluation, the co-trained pair's loss pass) works unchanged and reads only what it
indexes; `ImageFiles.subset(idx)` is the lazy selection the pipeline takes (meta split,
long-tail, train_subset) and keeps the per-example index of the split it was taken from.

Two layouts (config.data_source, with config.image_folder):

- `list_file`: each split is a text file of '<relative image path> <integer label>' lines (as
  Clothing1M's noisy_label_kv.txt / clean_label_kv.txt and WebVision's
  info/train_filelist_google.txt / info/val_filelist.txt), or of bare image paths whose labels are
  looked up in such a file (Clothing1M's noisy_train_key_list.txt with noisy_label_kv.txt, and
  clean_test_key_list.txt / clean_val_key_list.txt with clean_label_kv.txt). Paths are relative to
  data_dir/<split>_root.
- `class_folders`: data_dir/<split>_root/<class name>/**/<image> (torchvision's ImageFolder);
  labels are the indices of the sorted class-folder names of the training split.

Decoding (`decode_image`, the `DecodeSpec`): RGB, the shorter side resized to `resize` pixels (the
longer one to int(resize * long / short), torchvision's `Resize(int)`), then the central
`crop` x `crop` square (torchvision's `CenterCrop`, offsets round((side - crop) / 2)). Training
and meta images are stored as `image_size` squares (crop = resize = image_size) for the
on-device random resized crop; test images as the central `augment.crop_size` square of the same
resize (the ImageNet evaluation transform Resize(256) + CenterCrop(224)) when augment.crop is
'resized', else as `image_size` squares too.

A missing list file or image raises DataNotFoundError naming it (and the list-file line), a line
that cannot be parsed or an image Pillow cannot decode raises DataCorruptError naming the file and
line.
"""

import concurrent.futures
import dataclasses
import functools
import os
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image

from famus_jax.data.augment import resized_crop_of
from famus_jax.data.sources import RawData
from famus_jax.errors import ConfigError
from famus_jax.errors import DataCorruptError
from famus_jax.errors import DataNotFoundError

LAYOUTS = ('list_file', 'class_folders')
SPLITS = ('train', 'meta', 'test')
RESAMPLE = {'nearest': Image.Resampling.NEAREST, 'bilinear': Image.Resampling.BILINEAR,
            'bicubic': Image.Resampling.BICUBIC, 'lanczos': Image.Resampling.LANCZOS}
# File name endings the class-folder layout takes as images (compared in lower case).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
# At most this many missing files are named in the error of `check_files`.
_MISSING_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """How one image file becomes a stored uint8 (crop, crop, 3) image (module docstring).

  resize: the shorter side after resizing; crop: the side of the central square (<= resize);
  resample: a key of RESAMPLE; jpeg_draft: let libjpeg decode a JPEG at the smallest DCT scale
  that keeps the shorter side >= resize (`PIL.Image.draft`; faster, slightly different pixels);
  threads: decoding threads per batch (0 or 1 = the calling thread).
  """
  resize: int
  crop: int
  resample: str
  jpeg_draft: bool
  threads: int


def resized_shape(width: int, height: int, resize: int) -> tuple[int, int]:
  """(width, height) after resizing the shorter side to `resize` (torchvision's `Resize(int)`)."""
  if width <= height:
    return resize, max(resize, int(resize * height / width))
  return max(resize, int(resize * width / height)), resize


def decode_image(path: str, spec: DecodeSpec) -> np.ndarray:
  """uint8 (spec.crop, spec.crop, 3): the image file at `path`, decoded, resized and cropped.

  Raises OSError (FileNotFoundError when it is missing) or PIL.UnidentifiedImageError; the
  caller names the list-file line.
  """
  with Image.open(path) as image:
    if spec.jpeg_draft and image.format == 'JPEG':
      short = min(image.size)
      scale = spec.resize / short
      image.draft('RGB', (max(1, int(image.size[0] * scale)), max(1, int(image.size[1] * scale))))
    image = image.convert('RGB')
    width, height = resized_shape(*image.size, spec.resize)
    if (width, height) != image.size:
      image = image.resize((width, height), RESAMPLE[spec.resample])
    left = int(round((width - spec.crop) / 2.0))
    top = int(round((height - spec.crop) / 2.0))
    image = image.crop((left, top, left + spec.crop, top + spec.crop))
    return np.asarray(image, dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def _thread_pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
  """One shared pool per thread count (Pillow releases the GIL while it decodes and resizes)."""
  return concurrent.futures.ThreadPoolExecutor(max_workers=threads,
                                               thread_name_prefix='famus_decode')


class ImageFiles:
  """An array-like of N image files: shape (N, crop, crop, 3), dtype uint8, decoded on demand.

  It holds `root` (the directory the paths are relative to), `paths` (object (N,) of relative
  paths), `lines` (int64 (N,) the 1-based list-file line of each, 0 for the class-folder layout),
  `list_file` (the file they were listed in, or the class-folder root) and the `DecodeSpec`;
  never pixels. `images[key]` with an int, a slice, a bool mask or an int array of any shape
  decodes those files: uint8 key_shape + (crop, crop, 3). `np.asarray(images)` decodes all N
  (only for small sets). A missing file raises DataNotFoundError, an undecodable one
  DataCorruptError, each naming the file and its list-file line.
  """

  def __init__(self, root: str, paths: Sequence[str], lines: Sequence[int], list_file: str,
               spec: DecodeSpec):
    self.root, self.list_file, self.spec = root, list_file, spec
    self.paths = np.asarray(paths, dtype=object).reshape(-1)
    self.lines = np.asarray(lines, dtype=np.int64).reshape(-1)
    if len(self.paths) != len(self.lines):
      raise ValueError(f'{len(self.paths)} paths but {len(self.lines)} line numbers')

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self.paths), self.spec.crop, self.spec.crop, 3)

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(np.uint8)

  @property
  def ndim(self) -> int:
    return 4

  def __len__(self) -> int:
    return len(self.paths)

  def __repr__(self) -> str:
    return f'ImageFiles({len(self)} files listed in {self.list_file}, stored as {self.shape[1:]})'

  def subset(self, idx) -> 'ImageFiles':
    """The lazy selection `idx` (int or bool index array): another ImageFiles, nothing decoded."""
    idx = np.asarray(idx)
    return ImageFiles(self.root, self.paths[idx], self.lines[idx], self.list_file, self.spec)

  def where(self, i: int) -> str:
    """'<file> (<list file> line <n>)': where example i comes from, for error messages."""
    path = os.path.join(self.root, self.paths[i])
    return f'{path} ({self.list_file} line {self.lines[i]})' if self.lines[i] else path

  def _positions(self, key) -> np.ndarray:
    """int64 array of the positions `key` selects (numpy's rules for int / slice / arrays)."""
    n = len(self)
    if isinstance(key, slice):
      return np.arange(*key.indices(n), dtype=np.int64)
    key = np.asarray(key)
    if key.dtype == bool:
      if key.shape != (n,):
        raise IndexError(f'boolean index of shape {key.shape} for {n} images')
      return np.flatnonzero(key)
    if not np.issubdtype(key.dtype, np.integer):
      raise IndexError(f'images are indexed by integers, slices or masks, not {key.dtype}')
    if key.size and (key.min() < -n or key.max() >= n):
      raise IndexError(f'index out of range for {n} images')
    return np.where(key < 0, key + n, key).astype(np.int64)

  def _decode(self, i: int) -> np.ndarray:
    path = os.path.join(self.root, self.paths[i])
    try:
      return decode_image(path, self.spec)
    except FileNotFoundError as e:
      raise DataNotFoundError(f'Image file missing: {self.where(i)}. Restore it, or remove its '
                              'line from the list file.') from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      # PIL.UnidentifiedImageError is an OSError; truncated files raise OSError on load.
      raise DataCorruptError(f'Damaged image file: {self.where(i)}: {type(e).__name__}: {e}. '
                             'Replace it, or remove its line from the list file.') from e

  def __getitem__(self, key) -> np.ndarray:
    positions = self._positions(key)
    flat = positions.reshape(-1)
    out = np.empty((len(flat),) + self.shape[1:], np.uint8)
    if self.spec.threads > 1 and len(flat) > 1:
      decoded = _thread_pool(self.spec.threads).map(self._decode, flat)
    else:
      decoded = map(self._decode, flat)
    for row, image in enumerate(decoded):
      out[row] = image
    return out.reshape(positions.shape + self.shape[1:])

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    del copy  # always a new array
    images = self[np.arange(len(self))]
    return images if dtype is None else images.astype(dtype)


def take_images(images, idx):
  """images[idx] for an in-memory uint8 array, the lazy `ImageFiles.subset(idx)` for files."""
  if isinstance(images, ImageFiles):
    return images.subset(idx)
  return images[idx]


# ---------------------------------------------------------------------------
# Reading the layouts.


class SplitFiles(NamedTuple):
  """Where one split is (config.image_folder.<split>_list / _labels / _root, resolved).

  list_file: the list file's path ('' = not given); label_file: the '<path> <label>' file the
  list's bare paths are looked up in ('' = the labels are in the list); root: the directory the
  image paths are relative to (class folders: the folder of class folders).
  """
  list_file: str
  label_file: str
  root: str


class Listing(NamedTuple):
  """The entries of one split: paths (str, relative to root), labels int32 (N,), lines int64 (N,)
  (1-based list-file lines; 0 for class folders)."""
  paths: list
  labels: np.ndarray
  lines: np.ndarray


def split_files(config, split: str) -> SplitFiles:
  """The `SplitFiles` of `split` (train | meta | test) under config.data_dir."""
  cfg = config.image_folder
  join = lambda name: os.path.join(config.data_dir, name) if name else ''
  return SplitFiles(list_file=join(cfg[f'{split}_list']), label_file=join(cfg[f'{split}_labels']),
                    root=os.path.join(config.data_dir, cfg[f'{split}_root']))


def _missing_list(path: str, field: str) -> DataNotFoundError:
  return DataNotFoundError(
      f'List file not found: {path} (config.image_folder.{field}, relative to '
      f'config.data_dir). Put the data set\'s list files and images in data_dir (docs/data.md, '
      '"Image files on disk") or set the field to the file\'s path.')


def _read_lines(path: str, field: str) -> list:
  """[(1-based line number, stripped text)] of the non-empty lines of a list file."""
  if not os.path.isfile(path):
    raise _missing_list(path, field)
  try:
    with open(path, encoding='utf-8') as f:
      return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
  except UnicodeDecodeError as e:
    raise DataCorruptError(f'{path} is not a UTF-8 text list file ({e})') from e


def _label(text: str, path: str, number: int) -> int:
  try:
    label = int(text)
  except ValueError:
    label = -1
  if label < 0:
    raise DataCorruptError(f'{path} line {number}: label {text!r} is not an integer >= 0 '
                           "(lines are '<image path> <label>')")
  return label


def read_label_file(path: str, field: str) -> dict:
  """{relative image path: label} of a '<image path> <label>' file (e.g. noisy_label_kv.txt)."""
  out = {}
  for number, text in _read_lines(path, field):
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
      raise DataCorruptError(f'{path} line {number}: {text!r} is not \'<image path> <label>\'')
    out[parts[0]] = _label(parts[1], path, number)
  return out


def read_listing(files: SplitFiles, split: str) -> Listing:
  """The entries of a list-file split: '<path> <label>' lines, or bare paths + the label file.

  Raises DataNotFoundError for a missing list or label file and DataCorruptError naming the file
  and line of a line without a label, a label that is not an integer >= 0, or a path the label
  file does not have.
  """
  lines = _read_lines(files.list_file, f'{split}_list')
  table = read_label_file(files.label_file, f'{split}_labels') if files.label_file else None
  paths, labels, numbers = [], [], []
  for number, text in lines:
    if table is None:
      parts = text.rsplit(None, 1)
      if len(parts) != 2:
        raise DataCorruptError(f'{files.list_file} line {number}: {text!r} has no label '
                               f"(lines are '<image path> <label>'; a list of bare paths needs "
                               f'config.image_folder.{split}_labels)')
      path, label = parts[0], _label(parts[1], files.list_file, number)
    else:
      path = text if text in table else text.split()[0]  # a bare path, or '<path> <anything>'
      if path not in table:
        raise DataCorruptError(f'{files.list_file} line {number}: {path} has no label in '
                               f'{files.label_file}')
      label = table[path]
    paths.append(path)
    labels.append(label)
    numbers.append(number)
  return Listing(paths, np.asarray(labels, np.int32), np.asarray(numbers, np.int64))


def class_folder_names(root: str) -> list:
  """Sorted names of the sub-directories of `root` (the classes); DataNotFoundError if none."""
  if not os.path.isdir(root):
    raise DataNotFoundError(f'Image folder not found: {root} (class_folders layout: '
                            '<root>/<class name>/<image files>)')
  names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if not names:
    raise DataNotFoundError(f'{root} has no class folders (class_folders layout: '
                            '<root>/<class name>/<image files>)')
  return names


def read_class_folders(root: str, class_names: Sequence[str]) -> Listing:
  """The images under root/<class>/ (recursively, sorted) with label = index in `class_names`.

  A class folder of `root` that is not in `class_names` (e.g. a test folder of a class the
  training folder lacks) raises DataCorruptError.
  """
  index = {name: i for i, name in enumerate(class_names)}
  paths, labels = [], []
  for name in class_folder_names(root):
    if name not in index:
      raise DataCorruptError(f'{os.path.join(root, name)}: class {name!r} is not one of the '
                             'training classes')
    for directory, subdirs, files in os.walk(os.path.join(root, name)):
      subdirs.sort()
      for f in sorted(files):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(os.path.relpath(os.path.join(directory, f), root))
          labels.append(index[name])
  return Listing(paths, np.asarray(labels, np.int32), np.zeros(len(paths), np.int64))


def _keep_classes(listing: Listing, num_classes: int) -> Listing:
  """The entries with label < num_classes (mini-WebVision: the first 50 classes)."""
  keep = np.flatnonzero(listing.labels < num_classes)
  return Listing([listing.paths[i] for i in keep], listing.labels[keep], listing.lines[keep])


def _check_files_exist(files: ImageFiles, split: str) -> None:
  """DataNotFoundError naming the first missing image files of a split (and their lines)."""
  missing = [i for i, rel in enumerate(files.paths)
             if not os.path.isfile(os.path.join(files.root, rel))]
  if missing:
    shown = '; '.join(files.where(i) for i in missing[:_MISSING_SHOWN])
    raise DataNotFoundError(
        f'{len(missing)} of the {len(files)} {split} image files are missing, e.g. {shown}. '
        'Restore them or remove their lines (config.image_folder.check_files=False defers the '
        'error to the batch that reads one).')


def read_class_names(path: str, num_classes: int) -> tuple:
  """The first `num_classes` lines of a class-names file (one name per line, line i = label i)."""
  lines = [text for _, text in _read_lines(path, 'class_names_file')]
  if len(lines) < num_classes:
    raise DataCorruptError(f'{path} names {len(lines)} classes, the labels need {num_classes}')
  return tuple(lines[:num_classes])


def layout_of(config) -> str:
  """'list_file' or 'class_folders': config.data_source, or for 'auto' list_file when
  config.image_folder.train_list is set."""
  if config.data_source != 'auto':
    return config.data_source
  return 'list_file' if config.image_folder.train_list else 'class_folders'


def decode_specs(config) -> dict:
  """{split: DecodeSpec}: train and meta stored as image_size squares, test as the evaluation
  crop (augment.crop_size of the same resize when augment.crop is 'resized')."""
  cfg = config.image_folder
  test_crop = cfg.image_size
  if config.augment.crop == 'resized':
    test_crop = resized_crop_of(config.augment).size
  spec = functools.partial(DecodeSpec, resize=cfg.image_size, resample=cfg.resample,
                           jpeg_draft=cfg.jpeg_draft, threads=cfg.decode_threads)
  return {'train': spec(crop=cfg.image_size), 'meta': spec(crop=cfg.image_size),
          'test': spec(crop=test_crop)}


def load_image_folder(config) -> RawData:
  """The `RawData` of an image-folder source: `ImageFiles` images and int32 labels per split.

  It reads config.data_dir, data_source and image_folder.*, and augment.crop / crop_size (the
  test images' crop). The training labels are those of the list (real noise: clean labels are
  not known, so the pipeline's noise diagnostics see them as clean); labels >= num_classes are
  dropped when image_folder.num_classes > 0. With image_folder.meta_list the meta set is drawn
  from that list (`RawData.meta_pool_images`). Errors: see the module docstring.
  """
  cfg = config.image_folder
  layout = layout_of(config)
  specs = decode_specs(config)
  files = {s: split_files(config, s) for s in SPLITS}
  class_names = None
  listings = {}
  if layout == 'class_folders':
    class_names = class_folder_names(files['train'].root)
    listings['train'] = read_class_folders(files['train'].root, class_names)
    listings['test'] = read_class_folders(files['test'].root, class_names)
    if cfg.meta_root:
      listings['meta'] = read_class_folders(files['meta'].root, class_names)
  else:
    for split in SPLITS:
      if split != 'meta' or files['meta'].list_file:
        listings[split] = read_listing(files[split], split)
  num_classes = cfg.num_classes
  if not num_classes:  # all classes: those of the training split, which the others must share
    num_classes = len(class_names) if class_names else int(listings['train'].labels.max()) + 1
    for split, listing in listings.items():
      if len(listing.labels) and listing.labels.max() >= num_classes:
        raise DataCorruptError(
            f'{files[split].list_file}: label {listing.labels.max()}, but the training labels '
            f'name {num_classes} classes (config.image_folder.num_classes keeps fewer)')
  listings = {s: _keep_classes(x, num_classes) for s, x in listings.items()}
  if cfg.class_names_file:
    class_names = read_class_names(os.path.join(config.data_dir, cfg.class_names_file),
                                   num_classes)
  elif class_names is None:
    class_names = tuple(f'class_{i}' for i in range(num_classes))
  images = {}
  for split, listing in listings.items():
    where = files[split].list_file or files[split].root
    images[split] = ImageFiles(files[split].root, listing.paths, listing.lines, where,
                               specs[split])
    if not len(images[split]) and split != 'meta':
      raise DataNotFoundError(f'{where}: no {split} images (with labels < {num_classes})')
    if cfg.check_files:
      _check_files_exist(images[split], split)
  meta = images.get('meta')
  return RawData(
      train_images=images['train'], train_labels=listings['train'].labels,
      test_images=images['test'], test_labels=listings['test'].labels,
      num_classes=num_classes, class_names=tuple(class_names[:num_classes]),
      description=(f'{layout}:{images["train"].list_file} (labels as listed; clean labels '
                   'unknown)'),
      meta_pool_images=meta,
      meta_pool_labels=listings['meta'].labels if meta is not None else None)


def file_channel_stats(config, train_images: Any, estimate) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) float32 (3,) of image-file training images, [0, 1] units.

  config.image_folder.mean / std, or with stats_sample > 0 `estimate` (the pipeline's
  `channel_stats`) over that many evenly spaced training images (only those are decoded).
  """
  cfg = config.image_folder
  if cfg.stats_sample == 0:
    return np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
  n = len(train_images)
  sample = np.unique(np.linspace(0, n - 1, min(n, cfg.stats_sample)).astype(np.int64))
  return estimate(train_images[sample])


def check_config(config) -> None:
  """Raises ConfigError naming the first invalid field of config.image_folder (dataset
  'image_folder' only)."""
  if config.dataset != 'image_folder':
    return
  cfg = config.image_folder
  layout = layout_of(config)
  if layout == 'list_file':
    for field in ('train_list', 'test_list'):
      if not cfg[field]:
        raise ConfigError(f"config.image_folder.{field} is '': data_source='list_file' needs the "
                          'list file (relative to config.data_dir)')
  if layout == 'class_folders' and not (cfg.train_root and cfg.test_root):
    raise ConfigError('config.image_folder.train_root and test_root name the folders of class '
                      "folders for data_source='class_folders'; set both")
  if cfg.resample not in RESAMPLE:
    raise ConfigError(f'config.image_folder.resample={cfg.resample!r} is not one of '
                      f'{sorted(RESAMPLE)}')
  for field, low in (('image_size', 1), ('num_classes', 0), ('decode_threads', 0),
                     ('stats_sample', 0)):
    if cfg[field] < low:
      raise ConfigError(f'config.image_folder.{field}={cfg[field]!r} must be >= {low}')
  for field in ('mean', 'std'):
    values = tuple(cfg[field])
    if len(values) != 3 or (field == 'std' and min(values) <= 0):
      raise ConfigError(f'config.image_folder.{field}={values!r} must be 3 numbers (RGB)'
                        + (', all > 0' if field == 'std' else ''))
  if config.augment.crop == 'resized' and config.augment.crop_size > cfg.image_size:
    raise ConfigError(f'config.augment.crop_size={config.augment.crop_size} is larger than '
                      f'config.image_folder.image_size={cfg.image_size}: the test images are '
                      'centre crops of that size from the stored images')
