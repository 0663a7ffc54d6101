"""What the image-file presets (clothing1m, webvision) share: not a preset itself.

Image files on disk (dataset='image_folder', list files), stored as 256 x 256 centre squares and
cropped to 224 on the device (random resized crop + flip), real label noise (no synthetic noise),
ResNet-50, and FaMUS on MW-Net with pseudo-clean meta sets (FaMUS supplement Alg. 2: no clean
image is used for training).
"""

from famus_jax import config as base


def get_config():
  c = base.get_config()
  c.dataset = 'image_folder'
  c.data_source = 'list_file'
  c.image_folder.image_size = 256
  c.augment.crop = 'resized'
  c.augment.crop_size = 224
  c.augment.flip = True
  c.noise_type = 'none'          # real noise: the labels of the list files
  c.noise_rate = 0.0
  c.model = 'resnet50'
  c.method = 'famus'
  c.famus.base = 'mwnet'
  c.meta_set = 'pseudo_clean'
  c.num_meta = 0
  c.eval_batch_size = 250
  c.optimizer.momentum = 0.9
  c.lr.schedule = 'multistep'
  c.lr.decay = 0.1
  c.log_every = 200
  c.checkpoint_every = 2_000
  return c
