"""On-device batch augmentation and normalisation (pure jnp, jit-able).

Two training crops, chosen by config.augment.crop (`train_augment_fn`): the CIFAR recipe of zero
padding and a random crop (`augment_batch`), and ImageNet's random resized crop
(`augment_resized_batch`); both with random horizontal flips.
"""

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from famus_jax.errors import ConfigError


def _random_crop(images: jax.Array, rng: jax.Array, padding: int) -> jax.Array:
  """Zero-pads by `padding` on each side, then crops back at random offsets.

  `images` is float (B, H, W, C) and so is the result; each example gets its own offset.
  """
  b, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding),
                            (0, 0)))
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * padding + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, offsets)


def _random_flip(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Mirrors each example left-right with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1, :], images)


def augment_batch(images_uint8: jax.Array, rng: jax.Array, *,
                  crop_padding: int, flip: bool, mean, std,
                  train: bool) -> jax.Array:
  """Random crop + horizontal flip (if `train`), then normalisation.

  `images_uint8` is a uint8 (B, H, W, C) batch (numpy or jax) with pixels x; the result is float32
  (B, H, W, C), (x / 255 - mean) / std, where `mean` and `std` are the float (C,) per-channel mean
  and std in [0, 1] units (`DataSplits.mean`, `DataSplits.std`). `rng` is a PRNG key; the same key
  gives the same augmentation. `crop_padding` is the zero padding of the random crop in pixels
  (0 = no crop); the padding is black (0) before normalisation, as in the usual pad-and-crop CIFAR
  recipe. `flip` turns on random horizontal flips. With `train=False` there is no randomness, only
  the normalisation. `crop_padding`, `flip` and `train` are static.

  Shapes are static, so under `jax.jit` (with `crop_padding`, `flip`, `train` static, e.g. bound
  with `functools.partial`) it compiles once per batch shape.
  """
  x = jnp.asarray(images_uint8).astype(jnp.float32) / 255.0
  if train:
    crop_rng, flip_rng = jax.random.split(rng)
    if crop_padding > 0:
      x = _random_crop(x, crop_rng, crop_padding)
    if flip:
      x = _random_flip(x, flip_rng)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (x - mean) / std


# ---------------------------------------------------------------------------
# ImageNet-style augmentation: the random resized crop (config.augment.crop='resized').

# Values of config.augment.crop: pad = zero padding + random crop (`augment_batch`, CIFAR);
# resized = random resized crop to augment.crop_size (`augment_resized_batch`, ImageNet).
CROPS = ('pad', 'resized')


class ResizedCrop(NamedTuple):
  """The settings of the random resized crop (config.augment; `resized_crop_of`).

  size: side S of the square output; scale: (min, max) of the crop's area as a share of the
  image's; ratio: (min, max) of the crop's aspect ratio width / height (sampled log-uniformly);
  attempts: draws per example before the fallback crop.
  """
  size: int
  scale: tuple[float, float]
  ratio: tuple[float, float]
  attempts: int


class CropBoxes(NamedTuple):
  """One integer crop box per example, in pixels of the source image: int32 (B,) each.

  The box covers rows top .. top + height - 1 and columns left .. left + width - 1.
  """
  top: jax.Array
  left: jax.Array
  height: jax.Array
  width: jax.Array


def resized_crop_of(augment_cfg) -> ResizedCrop:
  """The `ResizedCrop` of config.augment (crop_size, crop_scale, crop_ratio, crop_attempts)."""
  return ResizedCrop(int(augment_cfg.crop_size), tuple(map(float, augment_cfg.crop_scale)),
                     tuple(map(float, augment_cfg.crop_ratio)), int(augment_cfg.crop_attempts))


def resized_crop_boxes(rng: jax.Array, num: int, height: int, width: int,
                       crop: ResizedCrop) -> CropBoxes:
  """`num` random boxes of the random resized crop in a `height` x `width` image.

  The crop of Szegedy et al., "Going deeper with convolutions" (CVPR 2015, Sec. 6), in the form of
  torchvision's `RandomResizedCrop.get_params`: each of `crop.attempts` draws takes an area
  a ~ U(scale) * height * width and an aspect ratio r = exp(U(log ratio)), hence the box
  w = round(sqrt(a r)), h = round(sqrt(a / r)); the first draw with 1 <= w <= width and
  1 <= h <= height is kept, at an offset uniform over the positions where it fits
  (top ~ U{0..height - h}, left ~ U{0..width - w}). When no draw fits, the fallback is the central
  crop of the whole image, narrowed to the nearest allowed aspect ratio. All draws are vectorised
  (shape (attempts, num)); `num`, `height`, `width` and `crop` are static.
  """
  area_rng, ratio_rng, top_rng, left_rng = jax.random.split(rng, 4)
  shape = (crop.attempts, num)
  area = height * width * jax.random.uniform(area_rng, shape, minval=crop.scale[0],
                                             maxval=crop.scale[1])
  log_ratio = jax.random.uniform(ratio_rng, shape, minval=math.log(crop.ratio[0]),
                                 maxval=math.log(crop.ratio[1]))
  aspect = jnp.exp(log_ratio)
  w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
  h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
  first = jnp.argmax(fits, axis=0)
  found = jnp.any(fits, axis=0)
  columns = jnp.arange(num)
  w, h = w[first, columns], h[first, columns]
  top = jnp.floor(jax.random.uniform(top_rng, (num,)) * (height - h + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(left_rng, (num,)) * (width - w + 1)).astype(jnp.int32)
  top, left = jnp.minimum(top, height - h), jnp.minimum(left, width - w)
  # Fallback (static): the whole image, cut down to the nearest allowed aspect ratio, centred.
  fw, fh = width, height
  if width / height < crop.ratio[0]:
    fh = int(round(width / crop.ratio[0]))
  elif width / height > crop.ratio[1]:
    fw = int(round(height * crop.ratio[1]))
  pick = lambda value, fallback: jnp.where(found, value, jnp.int32(fallback))
  return CropBoxes(top=pick(top, (height - fh) // 2), left=pick(left, (width - fw) // 2),
                   height=pick(h, fh), width=pick(w, fw))


def _interpolation_matrix(start: jax.Array, length: jax.Array, size: int,
                          source: int) -> jax.Array:
  """(size, source) bilinear weights that resample [start, start + length) to `size` samples.

  Output sample i reads the source at s_i = start + (i + 1/2) length / size - 1/2 (pixel
  centres, align_corners=False), clamped to [start, start + length - 1], from the two nearest
  pixels with weights 1 - frac(s_i) and frac(s_i): the crop-then-resize of torchvision's
  `F.resized_crop` with bilinear interpolation and no antialiasing.
  """
  length = length.astype(jnp.float32)
  first = start.astype(jnp.float32)
  last = first + length - 1.0
  pos = first + (jnp.arange(size, dtype=jnp.float32) + 0.5) * length / size - 0.5
  pos = jnp.clip(pos, first, last)
  low = jnp.floor(pos)
  frac = pos - low
  high = jnp.minimum(low + 1.0, last)
  one_hot = lambda p: jax.nn.one_hot(p.astype(jnp.int32), source, dtype=jnp.float32)
  return one_hot(low) * (1.0 - frac)[:, None] + one_hot(high) * frac[:, None]


def crop_and_resize(images: jax.Array, boxes: CropBoxes, size: int) -> jax.Array:
  """Each example's box resampled bilinearly to `size` x `size`: (B, H, W, C) -> (B, S, S, C).

  `images` is float (B, H, W, C) and `boxes` holds int32 (B,) boxes inside the images. Per
  example, out = A x B^T channel by channel, with A (S, H) and B (S, W) the interpolation
  matrices of the box's rows and columns (`_interpolation_matrix`); only pixels inside the box
  are read. A box of exactly S x S pixels is copied unchanged.
  """
  _, height, width, _ = images.shape

  def one(image, top, left, h, w):
    rows = _interpolation_matrix(top, h, size, height)
    cols = _interpolation_matrix(left, w, size, width)
    return jnp.einsum('sh,hwc,tw->stc', rows, image, cols)

  return jax.vmap(one)(images, *boxes)


def augment_resized_batch(images_uint8: jax.Array, rng: jax.Array, *, crop: ResizedCrop,
                          flip: bool, mean, std) -> jax.Array:
  """Random resized crop + horizontal flip, then normalisation (ImageNet-style training).

  `images_uint8` is a uint8 (B, H, W, C) batch with pixels x; the result is float32
  (B, S, S, C), S = crop.size: each example's box from `resized_crop_boxes` resampled by
  `crop_and_resize`, mirrored with probability 1/2 when `flip`, then (x / 255 - mean) / std with
  `mean`, `std` float (C,) in [0, 1] units. The same `rng` gives the same batch; `crop` and `flip`
  are static.
  """
  x = jnp.asarray(images_uint8).astype(jnp.float32) / 255.0
  b, h, w, _ = x.shape
  box_rng, flip_rng = jax.random.split(rng)
  x = crop_and_resize(x, resized_crop_boxes(box_rng, b, h, w, crop), crop.size)
  if flip:
    x = _random_flip(x, flip_rng)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def train_augment_fn(augment_cfg, mean, std) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """augment(images uint8 (B, H, W, C), rng) -> float32 normalised images: the step's training
  augmentation chosen by config.augment.crop.

  'pad' gives `augment_batch` with crop_padding and flip; 'resized' gives
  `augment_resized_batch` with `resized_crop_of(augment_cfg)` and flip. mean and std: float
  (C,), [0, 1] units.
  """
  if augment_cfg.crop == 'resized':
    return functools.partial(augment_resized_batch, crop=resized_crop_of(augment_cfg),
                             flip=augment_cfg.flip, mean=mean, std=std)
  return functools.partial(augment_batch, crop_padding=augment_cfg.crop_padding,
                           flip=augment_cfg.flip, mean=mean, std=std, train=True)


def check_augment_config(config) -> None:
  """Raises ConfigError naming the first invalid field of config.augment."""
  a = config.augment
  if a.crop not in CROPS:
    raise ConfigError(f'config.augment.crop={a.crop!r} is not one of {list(CROPS)}')
  if a.crop_padding < 0:
    raise ConfigError(f'config.augment.crop_padding={a.crop_padding!r} must be >= 0')
  if a.crop_size < 1:
    raise ConfigError(f'config.augment.crop_size={a.crop_size!r} must be >= 1')
  if a.crop_attempts < 1:
    raise ConfigError(f'config.augment.crop_attempts={a.crop_attempts!r} must be >= 1')
  for field, high in (('crop_scale', 1.0), ('crop_ratio', float('inf'))):
    pair = tuple(a[field])
    if len(pair) != 2 or not 0.0 < pair[0] <= pair[1] <= high:
      raise ConfigError(f'config.augment.{field}={pair!r} must be a pair (min, max) with '
                        f'0 < min <= max <= {high}')
