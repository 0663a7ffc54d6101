"""Image files on disk (Clothing1M / WebVision list files, class folders), the random resized
crop, and ResNet-50.

The data sets are built in tmp directories in their official layouts (tiny JPEG / PNG files
written with Pillow); pixels are checked against Pillow decoding done here with hand-computed
sizes, crops against a loop implementation of crop-then-bilinear-resize, ResNet-50's size against
torchvision's published parameter count.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from famus_jax import config as base_config
from famus_jax import config_check
from famus_jax.data import augment, build_data, image_folder
from famus_jax.errors import ConfigError, DataCorruptError, DataNotFoundError
from famus_jax.famus.layer_sets import build_layer_sets
from famus_jax.method_registry import create_method
from famus_jax.models import ResNet50, create_model, layer_names, layer_names_in_call_order
from famus_jax.models import resnet_imagenet
from famus_jax.presets import clothing1m, webvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C1M_CLASSES = 14
TRAIN_PER_CLASS, CLEAN_PER_CLASS = 3, 3


def _image(rng, height, width):
  return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _save(root, rel, image, **kwargs):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, **kwargs)
  return path


def _write(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(''.join(line + '\n' for line in lines))


def _clothing1m(root):
  """Clothing1M's layout: images/<a>/<b>/*.jpg, the kv files and key lists, category names.

  Training image k of class c is 26 + c rows x 40 columns; its noisy label is (c + k) % 14.
  Returns {'noisy': [(key, label)], 'clean': [(key, label)]}.
  """
  rng = np.random.default_rng(0)
  noisy, clean = [], []
  for c in range(C1M_CLASSES):
    for k in range(TRAIN_PER_CLASS):
      key = f'images/{c % 10}/{k}{c}/n{c}_{k}.jpg'
      _save(root, key, _image(rng, 26 + c, 40), quality=95)
      noisy.append((key, (c + k) % C1M_CLASSES))
    for k in range(CLEAN_PER_CLASS):
      key = f'images/{c % 10}/{k}{c}/c{c}_{k}.jpg'
      _save(root, key, _image(rng, 36, 28 + c), quality=95)
      clean.append((key, c))
  _write(f'{root}/noisy_label_kv.txt', [f'{k} {v}' for k, v in noisy])
  _write(f'{root}/noisy_train_key_list.txt', [k for k, _ in noisy])
  _write(f'{root}/clean_label_kv.txt', [f'{k} {v}' for k, v in clean])
  _write(f'{root}/clean_test_key_list.txt', [k for i, (k, _) in enumerate(clean) if i % 3 == 0])
  _write(f'{root}/clean_val_key_list.txt', [k for i, (k, _) in enumerate(clean) if i % 3])
  _write(f'{root}/category_names_eng.txt', [f'cloth {c}' for c in range(C1M_CLASSES)])
  return {'noisy': noisy, 'clean': clean}


@pytest.fixture(scope='module')
def c1m(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('clothing1m'))
  return root, _clothing1m(root)


def c1m_config(root, **fields):
  c = clothing1m.get_config()
  c.data_dir = root
  c.image_folder.image_size = 24
  c.augment.crop_size = 16
  c.image_folder.jpeg_draft = False
  c.image_folder.decode_threads = 2
  for key, value in fields.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def pillow_reference(path, new_size, box):
  """Pillow's own decode, resize to `new_size` (w, h) and crop to `box`: the expected pixels."""
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB').resize(new_size, Image.Resampling.BILINEAR).crop(box))


# ---------------------------------------------------------------------------------------------
# Clothing1M / WebVision list files, class folders.


def test_clothing1m_labels_order_and_pixels(c1m):
  root, listed = c1m
  data = build_data(c1m_config(root))
  noisy = listed['noisy']
  assert data.num_classes == C1M_CLASSES and data.class_names[3] == 'cloth 3'
  assert data.num_train == len(noisy) and data.num_meta == 0
  np.testing.assert_array_equal(data.train_labels, [v for _, v in noisy])
  test_keys = [listed['clean'][i] for i in range(0, len(listed['clean']), 3)]
  np.testing.assert_array_equal(data.test_labels, [v for _, v in test_keys])
  # Example i of the training set is line i + 1 of the key list (indices preserved).
  assert list(data.train_images.paths) == [k for k, _ in noisy]
  np.testing.assert_array_equal(data.train_images.lines, np.arange(1, len(noisy) + 1))
  assert data.train_images.shape == (len(noisy), 24, 24, 3) and data.train_images.dtype == np.uint8
  assert data.test_images.shape == (len(test_keys), 16, 16, 3)  # the evaluation crop
  np.testing.assert_allclose(data.mean, [0.485, 0.456, 0.406], rtol=1e-6)
  assert data.info['source'].startswith('list_file:')

  idx = np.array([7, 0, 40, 7])
  batch = data.train_images[idx]
  assert batch.shape == (4, 24, 24, 3) and batch.dtype == np.uint8
  for row, i in enumerate(idx):
    c = i // TRAIN_PER_CLASS  # 26 + c rows, 40 columns: shorter side 26 + c -> 24
    h = 26 + c
    width = int(24 * 40 / h)
    left = int(round((width - 24) / 2))
    expected = pillow_reference(os.path.join(root, noisy[i][0]), (width, 24),
                                (left, 0, left + 24, 24))
    np.testing.assert_array_equal(batch[row], expected)
  # Test image 0 is class 0's first clean image, 36 x 28: width 28 -> 24, height int(24*36/28).
  height = int(24 * 36 / 28)
  top, left = int(round((height - 16) / 2)), int(round((24 - 16) / 2))
  expected = pillow_reference(os.path.join(root, test_keys[0][0]), (24, height),
                              (left, top, left + 16, top + 16))
  np.testing.assert_array_equal(data.test_images[0], expected)
  # Other index forms: an int, a slice with a step, a mask, a 2-D array, negative ids.
  np.testing.assert_array_equal(data.train_images[7], batch[0])
  np.testing.assert_array_equal(data.train_images[0:10:7], data.train_images[np.array([0, 7])])
  mask = np.zeros(len(noisy), bool)
  mask[[0, 7]] = True
  np.testing.assert_array_equal(data.train_images[mask], batch[[1, 0]])
  assert data.train_images[np.array([[7, 0], [40, 7]])].shape == (2, 2, 24, 24, 3)
  np.testing.assert_array_equal(data.train_images[np.array([-len(noisy) + 7])][0], batch[0])


def test_meta_list_gives_class_balanced_clean_meta_set(c1m):
  root, listed = c1m
  data = build_data(c1m_config(root, meta_set='clean', num_meta=C1M_CLASSES, method='mwnet'))
  val_keys = {k for i, (k, _) in enumerate(listed['clean']) if i % 3}
  label_of = dict(listed['clean'])
  assert data.num_meta == C1M_CLASSES and data.num_train == len(listed['noisy'])
  np.testing.assert_array_equal(np.bincount(data.meta_labels, minlength=C1M_CLASSES), 1)
  assert set(data.meta_images.paths) <= val_keys
  assert [label_of[k] for k in data.meta_images.paths] == list(data.meta_labels)
  assert data.meta_images[np.arange(C1M_CLASSES)].shape == (C1M_CLASSES, 24, 24, 3)


def test_subsets_stay_lazy_and_only_indexed_files_are_decoded(c1m, monkeypatch):
  root, listed = c1m
  calls = []
  real = image_folder.decode_image
  monkeypatch.setattr(image_folder, 'decode_image', lambda path, spec: calls.append(path)
                      or real(path, spec))
  data = build_data(c1m_config(root, train_subset=C1M_CLASSES, imbalance_factor=1.4))
  assert calls == []  # loading, long tail, subset: nothing decoded
  for images in (data.train_images, data.test_images, data.meta_images):
    assert isinstance(images, image_folder.ImageFiles)
    held = [v for v in vars(images).values() if isinstance(v, np.ndarray)]
    assert held and all(v.ndim == 1 and v.shape == (len(images),) for v in held)
  assert data.num_train == C1M_CLASSES
  ids = np.array([3, 1])
  data.train_images[ids]
  assert calls == [os.path.join(root, data.train_images.paths[i]) for i in ids]
  # The per-example ids follow the subset: its position i is that key-list line.
  label_of_line = {n: v for n, (_, v) in enumerate(listed['noisy'], 1)}
  assert [label_of_line[n] for n in data.train_images.lines] == list(data.train_labels)
  calls.clear()
  stats = build_data(c1m_config(root, **{'image_folder.stats_sample': 5}))
  assert len(calls) == 5
  sample = stats.train_images[np.unique(np.linspace(0, stats.num_train - 1, 5).astype(int))]
  np.testing.assert_allclose(stats.mean, sample.reshape(-1, 3).mean(0) / 255, rtol=1e-5)


def test_fsr_dictionary_decodes_only_its_own_images(c1m, monkeypatch):
  root, _ = c1m
  config = c1m_config(root, method='fsr', **{'fsr.dictionary_size': C1M_CLASSES})
  data = build_data(config)
  fsr = create_method(config)
  shape = data.train_images.shape[1:]
  state = {'dict_ids': jnp.zeros((C1M_CLASSES, 1), jnp.int32),
           'dict_images': jnp.zeros((C1M_CLASSES, 1) + shape, jnp.uint8),
           'dict_purity': jnp.zeros((), jnp.float32),
           'image_mean': jnp.zeros((3,), jnp.float32), 'image_std': jnp.ones((3,), jnp.float32)}
  calls = []
  real = image_folder.decode_image
  monkeypatch.setattr(image_folder, 'decode_image', lambda path, spec: calls.append(path)
                      or real(path, spec))
  state = fsr.on_train_start(state, data)
  ids = np.asarray(state['dict_ids'])
  # One image per class, drawn by noisy label; only those files are read, once each.
  np.testing.assert_array_equal(data.train_labels[ids[:, 0]], np.arange(C1M_CLASSES))
  assert sorted(calls) == sorted(os.path.join(root, data.train_images.paths[i])
                                 for i in ids.reshape(-1))
  np.testing.assert_array_equal(state['dict_images'], data.train_images[ids])


@pytest.fixture(scope='module')
def webvision_dir(tmp_path_factory):
  """WebVision 1.0's layout: google/q<class>/*.jpg, val_images_256/, info/ lists and synsets."""
  root = str(tmp_path_factory.mktemp('webvision'))
  rng = np.random.default_rng(1)
  train, val = [], []
  for c in (0, 7, 49, 50, 63):  # 50 and 63 are outside mini-WebVision's first 50 classes
    for k in range(2):
      rel = f'google/q{c + 1:04d}/{k:08d}.jpg'
      _save(root, rel, _image(rng, 20, 26), quality=90)
      train.append(f'{rel} {c}')
    rel = f'val{c:06d}.jpg'
    _save(root, f'val_images_256/{rel}', _image(rng, 26, 20), quality=90)
    val.append(f'{rel} {c}')
  _write(f'{root}/info/train_filelist_google.txt', train)
  _write(f'{root}/info/val_filelist.txt', val)
  _write(f'{root}/info/synsets.txt', [f'n{i:08d} synset {i}' for i in range(1000)])
  return root


def test_webvision_keeps_the_first_50_classes(webvision_dir):
  c = webvision.get_config()
  c.data_dir = webvision_dir
  c.image_folder.image_size, c.augment.crop_size = 20, 16
  data = build_data(c)
  assert data.num_classes == 50 and len(data.class_names) == 50
  assert data.class_names[7] == 'n00000007 synset 7'
  np.testing.assert_array_equal(data.train_labels, [0, 0, 7, 7, 49, 49])
  np.testing.assert_array_equal(data.test_labels, [0, 7, 49])
  assert data.test_images.root == os.path.join(webvision_dir, 'val_images_256')
  assert data.test_images[np.arange(3)].shape == (3, 16, 16, 3)
  np.testing.assert_array_equal(data.train_images.lines, [1, 2, 3, 4, 5, 6])


@pytest.fixture(scope='module')
def class_folders(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('folders'))
  rng = np.random.default_rng(2)
  for split, count in (('train', 3), ('val', 1)):
    for name in ('cat', 'ant', 'bee'):
      for k in range(count):
        _save(root, f'{split}/{name}/sub/{k}.png' if k == 2 else f'{split}/{name}/{k}.png',
              _image(rng, 12, 12))
      _save(root, f'{split}/{name}/notes.txt', Image.new('RGB', (1, 1)), format='PNG')
  return root


def folder_config(root, **image_folder_fields):
  c = base_config.get_config()
  c.dataset, c.data_source, c.data_dir = 'image_folder', 'class_folders', root
  c.image_folder.train_root, c.image_folder.test_root = 'train', 'val'
  c.image_folder.image_size = 12
  c.noise_type, c.num_meta = 'none', 0
  c.image_folder.update(image_folder_fields)
  return c


def test_class_folders_label_by_sorted_folder(class_folders):
  data = build_data(folder_config(class_folders))
  assert data.class_names == ('ant', 'bee', 'cat')
  np.testing.assert_array_equal(data.train_labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
  assert list(data.train_images.paths[:3]) == ['ant/0.png', 'ant/1.png', 'ant/sub/2.png']
  np.testing.assert_array_equal(data.test_labels, [0, 1, 2])
  with Image.open(os.path.join(class_folders, 'train', 'bee', '1.png')) as im:
    np.testing.assert_array_equal(data.train_images[4], np.asarray(im.convert('RGB')))
  os.makedirs(os.path.join(class_folders, 'val', 'wasp'))
  try:
    with pytest.raises(DataCorruptError, match=r"val/wasp: class 'wasp' is not one of"):
      build_data(folder_config(class_folders))
  finally:
    os.rmdir(os.path.join(class_folders, 'val', 'wasp'))


def test_jpeg_draft_decodes_close_to_the_full_decode(tmp_path):
  y, x = np.mgrid[0:480, 0:640] / 80.0
  smooth = np.stack([128 + 100 * np.sin(x), 128 + 100 * np.cos(y), 128 + 60 * np.sin(x + y)],
                    -1).astype(np.uint8)
  path = _save(str(tmp_path), 'big.jpg', Image.fromarray(smooth), quality=95)
  spec = image_folder.DecodeSpec(resize=60, crop=60, resample='bilinear', jpeg_draft=False,
                                 threads=0)
  full = image_folder.decode_image(path, spec).astype(float)
  draft = image_folder.decode_image(path, dataclasses.replace(spec, jpeg_draft=True))
  assert draft.shape == (60, 60, 3)
  assert np.abs(draft - full).mean() < 2.0


# ---------------------------------------------------------------------------------------------
# Errors: each names the file (and the list-file line).


def _broken_copy(c1m_root, tmp_path):
  """A copy of the Clothing1M fixture's list files pointing at the same images."""
  root = str(tmp_path)
  for name in os.listdir(c1m_root):
    src = os.path.join(c1m_root, name)
    os.symlink(src, os.path.join(root, name))
  return root


def _replace(root, name, lines):
  os.unlink(os.path.join(root, name))
  _write(os.path.join(root, name), lines)


def test_missing_and_malformed_list_files(c1m, tmp_path):
  root = _broken_copy(c1m[0], tmp_path)
  os.unlink(os.path.join(root, 'clean_test_key_list.txt'))
  with pytest.raises(DataNotFoundError,
                     match=r'clean_test_key_list\.txt .*image_folder\.test_list'):
    build_data(c1m_config(root))
  _write(os.path.join(root, 'clean_test_key_list.txt'), ['images/0/00/c0_0.jpg'])
  _replace(root, 'noisy_label_kv.txt', ['images/0/00/n0_0.jpg 1', 'images/0/10/n0_1.jpg one'])
  with pytest.raises(DataCorruptError, match=r"noisy_label_kv\.txt line 2: label 'one'"):
    build_data(c1m_config(root))
  _replace(root, 'noisy_label_kv.txt', ['images/0/00/n0_0.jpg 1'])
  with pytest.raises(DataCorruptError, match=r'noisy_train_key_list\.txt line 2: '
                     r'images/0/10/n0_1\.jpg has no label in .*noisy_label_kv\.txt'):
    build_data(c1m_config(root))
  c = c1m_config(root, **{'image_folder.train_labels': ''})
  with pytest.raises(DataCorruptError, match=r'noisy_train_key_list\.txt line 1: .* has no label'):
    build_data(c)


def test_missing_and_undecodable_images(tmp_path):
  root = str(tmp_path)
  keys = ['images/a.jpg', 'images/b.jpg', 'images/c.jpg']
  rng = np.random.default_rng(4)
  _save(root, keys[0], _image(rng, 30, 30), quality=90)
  with open(os.path.join(root, keys[1]), 'wb') as f:
    f.write(b'not a JPEG at all')
  good = os.path.join(root, keys[0])
  with open(good, 'rb') as f:
    head = f.read()[:300]
  _write(os.path.join(root, 'train.txt'), [f'{k} {i}' for i, k in enumerate(keys)])
  _write(os.path.join(root, 'test.txt'), [f'{keys[0]} 0'])
  c = base_config.get_config()
  c.dataset, c.data_source, c.data_dir = 'image_folder', 'list_file', root
  c.image_folder.train_list, c.image_folder.test_list = 'train.txt', 'test.txt'
  c.image_folder.image_size, c.num_meta, c.noise_type = 16, 0, 'none'
  with pytest.raises(DataNotFoundError, match=r'1 of the 3 train image files are missing, e\.g\. '
                     r'.*images/c\.jpg \(.*train\.txt line 3\)'):
    build_data(c)
  c.image_folder.check_files = False
  data = build_data(c)
  assert data.train_images[0].shape == (16, 16, 3)
  with pytest.raises(DataNotFoundError, match=r'Image file missing: .*images/c\.jpg '
                     r'\(.*train\.txt line 3\)'):
    data.train_images[np.array([0, 2])]
  with pytest.raises(DataCorruptError, match=r'Damaged image file: .*images/b\.jpg '
                     r'\(.*train\.txt line 2\): UnidentifiedImageError'):
    data.train_images[1]
  with open(os.path.join(root, keys[2]), 'wb') as f:
    f.write(head)  # a truncated JPEG
  with pytest.raises(DataCorruptError, match=r'Damaged image file: .*images/c\.jpg '
                     r'\(.*train\.txt line 3\)'):
    data.train_images[2]
  # A test label the training labels do not have (num_classes = 0: the training set's classes).
  _write(os.path.join(root, 'test.txt'), [f'{keys[0]} 5'])
  with pytest.raises(DataCorruptError, match=r'test\.txt: label 5, but the training labels '
                     r'name 3 classes'):
    build_data(c)


def test_config_errors_name_the_field(c1m):
  root = c1m[0]
  cases = [
      ({'augment.crop': 'inception'}, r'config\.augment\.crop=.inception. is not one of'),
      ({'augment.crop_scale': (0.5, 0.2)}, r'config\.augment\.crop_scale=\(0\.5, 0\.2\)'),
      ({'augment.crop_ratio': (0.0, 1.0)}, r'config\.augment\.crop_ratio'),
      ({'augment.crop_size': 32}, r'config\.augment\.crop_size=32 is larger than '
                                  r'config\.image_folder\.image_size=24'),
      ({'image_folder.resample': 'box'}, r'config\.image_folder\.resample=.box.'),
      ({'image_folder.train_list': ''}, r'config\.image_folder\.train_list is'),
      ({'image_folder.std': (0.2, 0.2)}, r'config\.image_folder\.std'),
      ({'data_source': 'cifar_archive'}, r'data_source=.cifar_archive. cannot serve dataset'),
      ({'base_width': 0}, r'config\.base_width=0'),
  ]
  for fields, message in cases:
    c = c1m_config(root, **fields)
    with pytest.raises(ConfigError, match=message):
      config_check.validate(c)
      build_data(c)


# ---------------------------------------------------------------------------------------------
# The random resized crop.


def crop_config(**fields):
  a = base_config.get_config().augment
  a.update(fields)
  return augment.resized_crop_of(a)


def test_resized_crop_boxes_fit_follow_the_key_and_the_distribution():
  crop = crop_config(crop_size=8)
  draw = jax.jit(augment.resized_crop_boxes, static_argnums=(1, 2, 3, 4))
  boxes = draw(jax.random.key(0), 4000, 30, 50, crop)
  top, left, h, w = map(np.asarray, boxes)
  assert top.shape == (4000,) and top.dtype == np.int32
  assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
  assert (top + h <= 30).all() and (left + w <= 50).all()
  area, aspect = h * w / (30 * 50), w / h
  # Rounding to whole pixels moves area and aspect a little outside the drawn ranges.
  assert area.min() > 0.06 and area.max() <= 1.0
  assert aspect.min() > 0.6 and aspect.max() < 1.6
  again = draw(jax.random.key(0), 4000, 30, 50, crop)
  other = draw(jax.random.key(1), 4000, 30, 50, crop)
  np.testing.assert_array_equal(np.asarray(again.top), top)
  assert (np.asarray(other.top) != top).mean() > 0.5
  # Square image, square crops of area share U(0.5, 1): every draw fits, so the share is uniform.
  sq = draw(jax.random.key(2), 20000, 100, 100,
            crop_config(crop_scale=(0.5, 1.0), crop_ratio=(1.0, 1.0)))
  share = np.asarray(sq.height) * np.asarray(sq.width) / 1e4
  np.testing.assert_array_equal(np.asarray(sq.height), np.asarray(sq.width))
  assert abs(share.mean() - 0.75) < 0.005 and abs(share.std() - 0.5 / math.sqrt(12)) < 0.005
  # A fixed 8 x 8 box in 16 x 16: offsets uniform over 0..8.
  fixed = draw(jax.random.key(3), 9000, 16, 16,
               crop_config(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)))
  counts = np.bincount(np.asarray(fixed.top), minlength=9)
  assert len(counts) == 9 and np.abs(counts / 1000 - 1).max() < 0.15
  # No draw fits (aspect 2 at full area): torchvision's fallback, the centred 16 x 8 box.
  fall = draw(jax.random.key(4), 5, 16, 16,
              crop_config(crop_scale=(1.0, 1.0), crop_ratio=(2.0, 2.0)))
  assert [np.asarray(v).tolist() for v in fall] == [[4] * 5, [0] * 5, [8] * 5, [16] * 5]


def loop_crop_resize(image, top, left, h, w, size):
  """Crop image[top:top+h, left:left+w] then bilinear resize to size x size (half-pixel centres,
  edge clamp), written out pixel by pixel."""
  crop = image[top:top + h, left:left + w].astype(np.float64)
  out = np.zeros((size, size, image.shape[2]))
  for i in range(size):
    y = min(max((i + 0.5) * h / size - 0.5, 0.0), h - 1)
    y0 = int(math.floor(y))
    y1, fy = min(y0 + 1, h - 1), y - y0
    for j in range(size):
      x = min(max((j + 0.5) * w / size - 0.5, 0.0), w - 1)
      x0 = int(math.floor(x))
      x1, fx = min(x0 + 1, w - 1), x - x0
      out[i, j] = ((1 - fy) * ((1 - fx) * crop[y0, x0] + fx * crop[y0, x1])
                   + fy * ((1 - fx) * crop[y1, x0] + fx * crop[y1, x1]))
  return out


def test_crop_and_resize_is_crop_then_bilinear_resize():
  rng = np.random.default_rng(5)
  images = rng.uniform(0, 1, (3, 20, 24, 2)).astype(np.float32)
  boxes = augment.CropBoxes(*(jnp.asarray(v, jnp.int32) for v in
                              ([0, 5, 3], [0, 2, 11], [20, 7, 9], [24, 13, 9])))
  resize = jax.jit(augment.crop_and_resize, static_argnums=2)
  out = np.asarray(resize(jnp.asarray(images), boxes, 9))
  for b in range(3):
    expected = loop_crop_resize(images[b], *(int(v[b]) for v in boxes), 9)
    np.testing.assert_allclose(out[b], expected, atol=1e-5)
  # A box of exactly the output size is copied.
  exact = augment.CropBoxes(*(jnp.asarray([v], jnp.int32) for v in (4, 6, 9, 9)))
  np.testing.assert_allclose(np.asarray(resize(jnp.asarray(images[:1]), exact, 9))[0],
                             images[0, 4:13, 6:15], atol=1e-6)


def test_resized_augmentation_is_selected_by_config_and_deterministic():
  rng = np.random.default_rng(6)
  images = rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
  mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
  cfg = base_config.get_config().augment
  cfg.crop, cfg.crop_size = 'resized', 12
  fn = jax.jit(augment.train_augment_fn(cfg, mean, std))
  key = jax.random.key(7)
  out = np.asarray(fn(images, key))
  assert out.shape == (4, 12, 12, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out, np.asarray(fn(images, key)))
  # By hand: the boxes of split(key)[0], crop-then-resize, the flips of split(key)[1].
  box_key, flip_key = jax.random.split(key)
  boxes = jax.jit(augment.resized_crop_boxes, static_argnums=(1, 2, 3, 4))(
      box_key, 4, 20, 20, augment.resized_crop_of(cfg))
  flips = np.asarray(jax.random.bernoulli(flip_key, 0.5, (4, 1, 1, 1)))[:, 0, 0, 0]
  for b in range(4):
    x = loop_crop_resize(images[b] / 255.0, *(int(v[b]) for v in boxes), 12)
    x = x[:, ::-1] if flips[b] else x
    np.testing.assert_allclose(out[b], (x - 0.5) / 0.25, atol=1e-4)
  cfg.crop = 'pad'
  pad = jax.jit(augment.train_augment_fn(cfg, mean, std))(images, key)
  ref = jax.jit(lambda x, k: augment.augment_batch(x, k, crop_padding=cfg.crop_padding,
                                                   flip=cfg.flip, mean=mean, std=std,
                                                   train=True))(images, key)
  np.testing.assert_array_equal(np.asarray(pad), np.asarray(ref))


# ---------------------------------------------------------------------------------------------
# ResNet-50.


def torchvision_shapes(num_classes, width=64):
  """{torchvision state_dict name: shape} of ResNet-50, from its architecture (Bottleneck
  blocks 3-4-6-3, expansion 4), written out here."""
  shapes = {'conv1.weight': (width, 3, 7, 7)}
  bn = lambda name, c: shapes.update({f'{name}.{k}': (c,) for k in (
      'weight', 'bias', 'running_mean', 'running_var')} | {f'{name}.num_batches_tracked': ()})
  bn('bn1', width)
  inplanes = width
  for s, blocks in enumerate((3, 4, 6, 3), start=1):
    planes = width * 2 ** (s - 1)
    for b in range(blocks):
      p = f'layer{s}.{b}.'
      shapes[p + 'conv1.weight'] = (planes, inplanes, 1, 1)
      bn(p + 'bn1', planes)
      shapes[p + 'conv2.weight'] = (planes, planes, 3, 3)
      bn(p + 'bn2', planes)
      shapes[p + 'conv3.weight'] = (4 * planes, planes, 1, 1)
      bn(p + 'bn3', 4 * planes)
      if b == 0:
        shapes[p + 'downsample.0.weight'] = (4 * planes, inplanes, 1, 1)
        bn(p + 'downsample.1', 4 * planes)
      inplanes = 4 * planes
  shapes['fc.weight'] = (num_classes, inplanes)
  shapes['fc.bias'] = (num_classes,)
  return shapes


@pytest.fixture(scope='module')
def resnet50_shapes():
  model = ResNet50(1000)
  x = jnp.zeros((1, 32, 32, 3))
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False)), x


def test_resnet50_matches_torchvision_size_and_layout(resnet50_shapes):
  model, variables, x = resnet50_shapes
  params = variables['params']
  assert sum(math.prod(v.shape) for v in jax.tree.leaves(params)) == 25_557_032
  names = layer_names(params)
  assert names == layer_names_in_call_order(model, variables, x)
  assert names == resnet_imagenet.resnet50_layer_names() and len(names) == 107
  tv = torchvision_shapes(1000)
  learnable = {k for k in tv if not k.endswith(('running_mean', 'running_var',
                                                'num_batches_tracked'))}
  assert sum(math.prod(tv[k]) for k in learnable) == 25_557_032
  assert {resnet_imagenet.torchvision_name(n) for n in names} == {
      k.rsplit('.', 1)[0] for k in tv}
  assert resnet_imagenet.torchvision_name('stage2_block1_shortcut_bn') == 'layer2.0.downsample.1'
  # A torchvision state dict (random values of its shapes) converts onto our variables.
  rng = np.random.default_rng(8)
  state = {k: rng.normal(size=s).astype(np.float32) for k, s in tv.items()}
  converted = resnet_imagenet.variables_from_torchvision(state)
  assert jax.tree.map(np.shape, converted) == jax.tree.map(lambda v: v.shape, variables)
  np.testing.assert_array_equal(converted['params']['stage3_block2_conv2']['kernel'],
                                state['layer3.1.conv2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(converted['params']['head']['kernel'], state['fc.weight'].T)
  np.testing.assert_array_equal(converted['batch_stats']['stem_bn']['var'],
                                state['bn1.running_var'])
  # FaMUS's 'reference' candidates are the last stage, found by name.
  sets = build_layer_sets(names, 'reference', '', 'block')
  assert sets.candidates == tuple(n for n in names if n.startswith('stage4_'))
  assert sets.always_on == ('head',)
  assert len(sets.bucket_floors) == 1 + 16 + 1  # stem, 16 blocks, head


def test_resnet50_forward_shapes_and_config():
  c = base_config.get_config()
  c.model, c.base_width = 'resnet50', 4
  model = create_model(c, 5)
  x = jnp.ones((2, 40, 36, 3))
  # Random variables of the model's shapes (an eager model.init compiles every initialiser).
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(9)
  variables = {'params': jax.tree.map(lambda v: rng.normal(0, 0.1, v.shape).astype(np.float32),
                                      shapes['params']),
               'batch_stats': jax.tree.map(lambda v: np.ones(v.shape, np.float32),
                                           shapes['batch_stats'])}
  logits, features = jax.jit(lambda v: model.apply(v, x, train=False,
                                                   return_features=True))(variables)
  assert logits.shape == (2, 5) and features.shape == (2, 32 * 4)
  assert variables['params']['stage4_block1_conv3']['kernel'].shape == (1, 1, 32, 128)
  assert np.isfinite(np.asarray(logits)).all()


# ---------------------------------------------------------------------------------------------
# End to end: main.py trains on the Clothing1M fixture through the preset's list files and
# resized crops. The model is swapped for the small CNN: ResNet-50's layout and forward are
# checked above, and compiling its training step would be most of this test's time.


def test_main_trains_on_the_clothing1m_list_files(c1m, tmp_path):
  root, _ = c1m
  workdir = tmp_path / 'run'
  flags = {'data_dir': root, 'image_folder.image_size': 40, 'augment.crop_size': 32,
           'model': 'small_cnn', 'num_steps': 2, 'batch_size': 4, 'eval_batch_size': 14,
           'method': 'erm', 'meta_set': 'clean', 'num_meta': C1M_CLASSES,
           'progress_bar': False, 'log_every': 1, 'eval_every': 2, 'checkpoint_every': 2,
           'image_folder.decode_threads': 2}
  cmd = [sys.executable, os.path.join(ROOT, 'main.py'), '--config=clothing1m',
         f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in flags.items()]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['steps'] == 2 and summary['method'] == 'erm'
  config = json.loads((workdir / 'config.json').read_text())
  assert config['model'] == 'small_cnn' and config['augment']['crop'] == 'resized'
  info = json.loads((workdir / 'data_info.json').read_text())
  assert info['source'].startswith('list_file:') and info['num_meta'] == C1M_CLASSES
  assert info['num_train'] == C1M_CLASSES * TRAIN_PER_CLASS
  events = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train = [e for e in events if e['event'] == 'train']
  assert [e['step'] for e in train] == [1, 2] and all(np.isfinite(e['train_loss']) for e in train)
  evals = [e for e in events if e['event'] == 'eval']
  assert [e['step'] for e in evals] == [2] and 0 <= evals[0]['test_accuracy'] <= 1
