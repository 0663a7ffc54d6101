"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

An IDX file is: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d,
then d big-endian uint32 sizes, then the data in C order. Images are magic 0x00000803
(N, rows, cols), labels 0x00000801 (N,).
"""

import gzip
import os
import zlib

import numpy as np

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# Split name -> (images file stem, labels file stem).
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}


def parse_idx(data: bytes, expected_magic: int, name: str = '<bytes>'
              ) -> np.ndarray:
  """Parses uncompressed IDX bytes of unsigned bytes into a uint8 array.

  `data` is the file's contents and `name` the file name used in error messages. `expected_magic`
  is IMAGES_MAGIC (giving (N, rows, cols)) or LABELS_MAGIC (giving (N,)); the result has the shape
  stored in the header. Raises ValueError on a wrong magic number or a size that does not match the
  header.
  """
  if len(data) < 4:
    raise ValueError(f'{name}: too short to be an IDX file ({len(data)} bytes)')
  magic = int.from_bytes(data[:4], 'big')
  if magic != expected_magic:
    raise ValueError(
        f'{name}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} '
        '(is this the right IDX file, and is it decompressed correctly?)')
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f'{name}: truncated IDX header')
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], 'big')
                for i in range(ndim))
  size = int(np.prod(shape, dtype=np.int64))
  if len(data) - header != size:
    raise ValueError(
        f'{name}: header says shape {shape} ({size} bytes of data) but the '
        f'file holds {len(data) - header} bytes after the header')
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(directory: str, stem: str) -> str | None:
  """Returns `directory/stem` or `directory/stem.gz`, whichever exists."""
  for candidate in (stem, stem + '.gz'):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def has_idx_files(directory: str) -> bool:
  """True when all four (Fashion-)MNIST IDX files are in `directory`."""
  if not directory or not os.path.isdir(directory):
    return False
  return all(find_idx_file(directory, stem) is not None
             for pair in IDX_FILES.values() for stem in pair)


def read_idx_file(path: str, expected_magic: int) -> np.ndarray:
  """Reads one IDX file (gzip-compressed iff its first bytes say so)."""
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] == b'\x1f\x8b':  # gzip magic
    try:
      data = gzip.decompress(data)
    except EOFError as e:
      raise ValueError(f'{path}: truncated gzip file ({e})') from e
    except (gzip.BadGzipFile, zlib.error) as e:
      raise ValueError(f'{path}: damaged gzip file ({type(e).__name__}: {e})') from e
  return parse_idx(data, expected_magic, name=path)


def read_idx_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split of an MNIST-style directory.

  `directory` is the folder holding the IDX files (`.gz` or raw) and `split` is 'train' or 'test'
  (files `t10k-*`). The result is images uint8 (N, rows, cols, 1) and labels int32 (N,). Raises
  FileNotFoundError when a file is missing, and ValueError on malformed files or when images and
  labels disagree on N.
  """
  image_stem, label_stem = IDX_FILES[split]
  paths = []
  for stem in (image_stem, label_stem):
    path = find_idx_file(directory, stem)
    if path is None:
      raise FileNotFoundError(
          f'no {stem} or {stem}.gz in {directory!r}')
    paths.append(path)
  images = read_idx_file(paths[0], IMAGES_MAGIC)
  labels = read_idx_file(paths[1], LABELS_MAGIC)
  if images.ndim != 3:
    raise ValueError(f'{paths[0]}: expected 3 dimensions, got {images.shape}')
  if images.shape[0] != labels.shape[0]:
    raise ValueError(
        f'{paths[0]} has {images.shape[0]} images but {paths[1]} has '
        f'{labels.shape[0]} labels')
  return images[..., None].copy(), labels.astype(np.int32)


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as an IDX file (gzip-compressed if `path` ends .gz).

  Used by tests to build small files; 1-d arrays get the labels magic and 3-d arrays the images
  magic.
  """
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim])
  header += b''.join(int(s).to_bytes(4, 'big') for s in array.shape)
  data = header + array.tobytes()
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(data)
