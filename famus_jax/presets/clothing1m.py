"""Clothing1M (Xiao et al., CVPR 2015): 1M clothing images with real label noise, 14 classes.

The FaMUS supplement's setting (Sec. E, "Clothing1M"): ResNet-50, SGD with momentum 0.9 and
weight decay 1e-3, batch 32, learning rate 0.002 divided by 10 at epoch 100 and stopped at epoch
150, where a paper epoch is 1000 mini-batches: 150,000 steps, the decay after 100,000
(`lr.boundaries_epochs` counts passes over the training list: 3.2 passes for the 1,000,000 keys
of noisy_train_key_list.txt at 31,250 steps each; a list of N keys needs 100000 / (N // 32)).
The meta set is pseudo-clean (FaMUS supplement Alg. 2: two co-trained networks, each one's meta
set the other's per-epoch two-Gaussian division), so no clean image is used for training; the
division runs once per pass over the training set, not per paper epoch. Differences from the
paper: the network starts from random weights (the paper does not say; published Clothing1M
numbers usually start from ImageNet weights, which resnet_imagenet.variables_from_torchvision
converts from torchvision's, but the trainer does not load them yet); its mini-batches are drawn
uniformly, not balanced by label; meta_batch_size (not given) is 32.

The data: request Clothing1M from its authors (https://github.com/Cysu/noisy_label), unpack it
into one directory DIR holding images/, noisy_label_kv.txt, noisy_train_key_list.txt,
clean_label_kv.txt, clean_test_key_list.txt, clean_val_key_list.txt and
category_names_eng.txt, and pass --config.data_dir=DIR. Training images are stored as 256 x 256
centre squares (shorter side 256) and cropped to 224 on the device (random resized crop + flip);
the 10,526 clean test images are evaluated as Resize(256) + CenterCrop(224).
"""

from famus_jax.presets import _image_files


def get_config():
  c = _image_files.get_config()
  f = c.image_folder
  f.train_list = 'noisy_train_key_list.txt'
  f.train_labels = 'noisy_label_kv.txt'
  f.test_list = 'clean_test_key_list.txt'
  f.test_labels = 'clean_label_kv.txt'
  # The clean validation images, for meta_set='clean' (MW-Net's setting): --config.num_meta=N
  # draws N of them, class-balanced (with pseudo_clean and num_meta=0 none is used).
  f.meta_list = 'clean_val_key_list.txt'
  f.meta_labels = 'clean_label_kv.txt'
  f.num_classes = 14
  f.class_names_file = 'category_names_eng.txt'
  c.batch_size = 32
  c.meta_batch_size = 32
  c.optimizer.weight_decay = 1e-3
  c.lr.base = 0.002
  c.lr.boundaries_epochs = (3.2,)  # step 100,000 of 31,250 steps per pass
  c.num_steps = 150_000
  c.eval_every = 10_000
  return c
