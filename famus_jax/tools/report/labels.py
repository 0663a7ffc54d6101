"""Labels, order and colours of runs: method and variant names from `famus_jax.catalogue`.

A run's setting is (dataset, noise type, noise rate, imbalance factor, model
and length); its method label is the catalogue's one short name of its method
and variant ('famus(l2r)', 'mlc[reuse]', 'mwnet[pseudo_clean]'), plus the
fields that set it apart from the other runs of its method and setting
(`tag_variants`: 'fsr[relabel_momentum=0.1]').
"""

import collections
import json
import re
from typing import Optional

from flax import traverse_util

from famus_jax import catalogue
from famus_jax import config as schema

NOISE_ABBREV = {'symmetric': 'sym', 'asymmetric': 'asym', 'none': 'clean'}
# Colours of the labels the catalogue does not colour, in order; they repeat only after the
# last (a grid with more variants than these shares colours).
SPARE_COLOURS = ('tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray',
                 'gold', 'teal', 'navy', 'maroon', 'lime', 'darkorange', 'slateblue', 'magenta',
                 'darkgreen', 'sienna', 'deepskyblue', 'crimson', 'darkkhaki', 'black')


def tag_variants(runs: list) -> None:
  """Sets `variant_tags` of runs that differ from the other runs of their method and setting.

  Among the runs of one method (config.method) in one setting, every field under the
  method's `ablation_fields` (catalogue) whose value is not the same for all of them tags
  the runs that do not have the reference value: the schema default where a run has it,
  else the most common value. E.g. an ablation `--config.fsr.relabel_momentum=0.1` next to
  default FSR runs reads 'fsr[relabel_momentum=0.1]', so it is never averaged with them.
  Fields a catalogue `Variant` names are left to `method_label`, and a field does not tag
  (nor count for) a run on which it has no effect (`MethodEntry.inert`: FaMUS's warm-up rate
  in a run without a warm-up).
  """
  defaults = traverse_util.flatten_dict(schema.get_config().to_dict(), sep='.')
  named = set(catalogue.named_fields())
  groups = collections.defaultdict(list)
  for run in runs:
    groups[(run.setting, run.config.get('method', '?'))].append(run)
  for (_, method), members in groups.items():
    entry = catalogue.entry(method)
    prefixes = entry.ablation_fields if entry else ()
    if not prefixes:
      continue
    flats = [traverse_util.flatten_dict(r.config, sep='.') for r in members]
    keys = sorted({k for f in flats for k in f if k.startswith(prefixes)} - named)
    for key in keys:
      values = [None if entry.inert(key, f) else json.dumps(f.get(key), sort_keys=True)
                for f in flats]
      live = [v for v in values if v is not None]
      if len(set(live)) < 2:
        continue
      default = json.dumps(defaults.get(key), sort_keys=True)
      reference = (default if default in live
                   else collections.Counter(live).most_common(1)[0][0])
      short = key.split('.', 1)[1] if '.' in key else key
      for run, value, f in zip(members, values, flats):
        if value is not None and value != reference:
          run.variant_tags = run.variant_tags + (f'{short}={f.get(key)}',)


def method_label(config: dict, extra_tags: tuple = ()) -> str:
  """The catalogue's label of the run's method and variant, with `extra_tags` added.

  E.g. 'famus(l2r)', 'famus(mlc)[reuse]', 'famus[all]', 'fsr[one_pass]',
  'famus[pseudo_clean,semi]'; the tags of `tag_variants` go last in the brackets.
  """
  label = catalogue.label(config)
  if not extra_tags:
    return label
  if label.endswith(']'):
    return f'{label[:-1]},{",".join(extra_tags)}]'
  return f'{label}[{",".join(extra_tags)}]'


def without_tag(label: str, tag: str) -> Optional[str]:
  """`label` with the bracketed tag `tag` removed ('mwnet[reuse,every5]' -> 'mwnet[every5]',
  'mlc[reuse]' -> 'mlc'); None when the label has no such tag."""
  match = re.fullmatch(r'(.*)\[(.*)\]', label)
  if match is None or tag not in match.group(2).split(','):
    return None
  rest = [t for t in match.group(2).split(',') if t != tag]
  return match.group(1) + (f'[{",".join(rest)}]' if rest else '')


def schedule_label(config: dict) -> str:
  """Model and run length, e.g. 'ResNet-8, 8000 imgs, 5 ep' (runs compare only within one)."""
  model = config.get('model', '?')
  if model == 'resnet':
    model = f'ResNet-{config.get("depth")}'
  elif model == 'wide_resnet':
    model = f'WRN-{config.get("depth")}-{config.get("width")}'
  parts = [model]
  if config.get('train_subset'):
    parts.append(f'{config["train_subset"]} imgs')
  steps = config.get('num_steps')
  parts.append(f'{steps} steps' if steps else f'{config.get("num_epochs", "?")} ep')
  return ', '.join(parts)


def setting_label(setting: tuple) -> str:
  """E.g. 'fashion_mnist sym 40% (ResNet-8, 5 ep)', 'cifar10 asym 40% LT x100 (...)'."""
  dataset, noise_type, rate, imbalance = setting[:4]
  label = dataset if noise_type == 'none' else (
      f'{dataset} {NOISE_ABBREV.get(noise_type, noise_type)} {100 * rate:g}%')
  label += f' LT x{imbalance:g}' if imbalance > 1 else ''
  return label + (f' ({setting[4]})' if len(setting) > 4 else '')


def run_label(run, with_setting: bool = True) -> str:
  """E.g. 'famus s0, fashion_mnist sym 40% (...)'."""
  label = f'{run.method} s{run.seed}'
  return f'{label}, {setting_label(run.setting)}' if with_setting else label


def slug(text: str) -> str:
  """File-name-safe version of a label."""
  return re.sub(r'[^A-Za-z0-9]+', '_', text.replace('%', '')).strip('_')


def base_method(label: str) -> str:
  """The config.method a label starts with ('famus' of 'famus(l2r)[reuse]')."""
  return re.split(r'[(\[]', label)[0]


def method_sort_key(label: str) -> tuple:
  """The catalogue's order of methods, each method's plain label before its variants."""
  base, order = base_method(label), catalogue.names()
  rank = order.index(base) if base in order else len(order)
  return (rank, label != base, label)


def method_colours(labels) -> dict:
  """Each method's catalogue colour for its plain label, spare colours for the rest in order."""
  declared = {n: e.colour for n, e in catalogue.CATALOGUE.items() if e.colour}
  spare = [c for c in SPARE_COLOURS if c not in declared.values()]
  colours, extra = {}, 0
  for label in sorted(set(labels), key=method_sort_key):
    if label in declared:
      colours[label] = declared[label]
    else:
      colours[label] = spare[extra % len(spare)]
      extra += 1
  return colours
