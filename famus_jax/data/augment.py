"""On-device batch augmentation and normalisation (pure jnp, jit-able)."""

import jax
import jax.numpy as jnp


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
