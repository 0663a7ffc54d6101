"""Mini-WebVision (Li et al., 2017; Jiang et al., ICML 2018): the Google images of WebVision 1.0's
first 50 classes (about 66,000 images with real label noise), tested on their WebVision
validation images.

The FaMUS supplement's setting (Sec. E, "WebVision"), except the network: the paper trains an
Inception-ResNet-v2; this preset uses ResNet-50 instead (the one ImageNet-sized network
famus_jax has). Batch 16, SGD with momentum 0.9 and weight decay 5e-4, learning rate 0.02
divided by 10 at epoch 100, 150 epochs; pseudo-clean meta sets (FaMUS supplement Alg. 2), no
clean data. Not done: the ImageNet ILSVRC12 validation images of the same 50 classes, the
paper's second test set (evaluate them with a copy of this config whose test split is an
ImageNet class-folder layout), and top-5 accuracy.

The data: download WebVision 1.0's resized images ("Resized Images (small version)" of
https://data.vision.ee.ethz.ch/cvl/webvision/download.html) and its meta information into one
directory DIR holding google/, val_images_256/ and info/ (train_filelist_google.txt,
val_filelist.txt, synsets.txt), and pass --config.data_dir=DIR. Training images are stored as
256 x 256 centre squares and cropped to 224 on the device (random resized crop + flip).
"""

from famus_jax.presets import _image_files


def get_config():
  c = _image_files.get_config()
  f = c.image_folder
  f.train_list = 'info/train_filelist_google.txt'
  f.test_list = 'info/val_filelist.txt'
  f.test_root = 'val_images_256'
  f.num_classes = 50
  f.class_names_file = 'info/synsets.txt'
  c.batch_size = 16
  c.meta_batch_size = 16
  c.optimizer.weight_decay = 5e-4
  c.lr.base = 0.02
  c.lr.boundaries_epochs = (100,)
  c.num_epochs = 150
  c.eval_every = 4_000
  return c
