"""The report's inputs: run workdirs, estimator-quality workdirs and benchmark files.

A run workdir holds config.json + metrics.jsonl (usually summary.json; what
`famus_jax.train.trainer` writes; a kept record of a finished run, from
scripts/keep_run_records.sh, has metrics.jsonl.gz instead); a quality workdir config.json +
quality.jsonl (`python -m famus_jax.tools.quality`); a benchmark file is the
JSON of `python -m famus_jax.tools.benchmark --out=F.json`.
"""

import dataclasses
import json
import os
from typing import Optional

from famus_jax import catalogue
from famus_jax import config as schema
from famus_jax.tools.report import labels
from famus_jax.train.logbook import read_jsonl


def read_json(path: str) -> Optional[dict]:
  """The JSON value in `path`, None when there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass
class RunDir:
  """One workdir: its config, summary (None while unfinished) and logged events."""
  workdir: str
  config: dict
  summary: Optional[dict]
  events: list
  quality: list
  quality_summary: Optional[dict]
  variant_tags: tuple = ()      # set by `labels.tag_variants`: fields that set this run apart

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))

  @property
  def finished(self) -> bool:
    return self.summary is not None

  @property
  def has_metrics(self) -> bool:
    return bool(self.events)

  @property
  def seed(self):
    return self.config.get('seed', 0)

  @property
  def setting(self) -> tuple:
    c = self.config
    return (c.get('dataset', '?'), c.get('noise_type', 'none'), float(c.get('noise_rate', 0.0)),
            float(c.get('imbalance_factor', 1.0)), labels.schedule_label(c))

  @property
  def method(self) -> str:
    return labels.method_label(self.config, self.variant_tags)

  def of(self, event: str) -> list:
    """The events of one kind (a `famus_jax.catalogue` event name), in order."""
    return [e for e in self.events if e.get('event') == event]

  @property
  def total_steps(self) -> int:
    if self.summary and self.summary.get('steps'):
      return int(self.summary['steps'])
    return max([int(e.get('step', 0)) for e in self.events] or [0])

  @property
  def realised_noise_rate(self) -> Optional[float]:
    if self.summary and self.summary.get('realised_noise_rate') is not None:
      return float(self.summary['realised_noise_rate'])
    data = self.of(catalogue.DATA)
    return data[0].get('realised_noise_rate') if data else None


METRICS_FILES = ('metrics.jsonl', 'metrics.jsonl.gz')  # a workdir's; a kept record's


def is_run_dir(path: str) -> bool:
  """A run workdir (metrics.jsonl), a kept run record (metrics.jsonl.gz) or an
  estimator-quality workdir (quality.jsonl)."""
  has = lambda name: os.path.isfile(os.path.join(path, name))
  return os.path.isdir(path) and has('config.json') and (
      any(has(name) for name in METRICS_FILES) or has('quality.jsonl'))


def with_schema_defaults(config: Optional[dict]) -> dict:
  """A run's config.json over the schema's defaults (famus_jax/config.py).

  Fields a run's record lacks (written by an older version) read as the one
  default the library declares, not as a second default written here; a field
  whose default changed since reads as what runs did before it existed
  (`config.record_defaults`).
  """
  def merge(base, over):
    out = dict(base)
    for key, value in (over or {}).items():
      out[key] = merge(base[key], value) if isinstance(base.get(key), dict) else value
    return out
  return merge(schema.record_defaults().to_dict(), config)


def _read_jsonl_if_there(path: str) -> list:
  return read_jsonl(path) if os.path.exists(path) else []


def load_run(workdir: str) -> RunDir:
  """Everything the report reads from one workdir."""
  join = lambda name: os.path.join(workdir, name)
  return RunDir(workdir=workdir, config=with_schema_defaults(read_json(join('config.json'))),
                summary=read_json(join('summary.json')),
                events=next((read_jsonl(join(name)) for name in METRICS_FILES
                             if os.path.exists(join(name))), []),
                quality=_read_jsonl_if_there(join('quality.jsonl')),
                quality_summary=read_json(join('quality_summary.json')))


def _expected(path: str, why: str) -> str:
  return (f'{path}: expected a run workdir (config.json + metrics.jsonl), a directory of run '
          f'workdirs, or a benchmark .json file; {why}')


def load_inputs(paths: list) -> tuple:
  """(runs, benchmarks) from the command line's paths; ValueError names a bad path."""
  runs, benchmarks = [], []
  for path in paths:
    if os.path.isfile(path) and path.endswith('.json'):
      data = read_json(path)
      if not isinstance(data, dict) or 'methods' not in data:
        raise ValueError(f'{path}: a .json input must be a benchmark result (a top-level '
                         f'"methods" key, from python -m famus_jax.tools.benchmark --out=F.json)')
      benchmarks.append((path, data))
    elif is_run_dir(path):
      runs.append(load_run(path))
    elif os.path.isdir(path):
      subdirs = sorted(os.path.join(path, d) for d in os.listdir(path))
      found = [d for d in subdirs if is_run_dir(d)]
      for d in subdirs:
        if os.path.isdir(d) and d not in found:
          print(f'{d}: no config.json + metrics.jsonl yet (a run just starting?); skipped')
      if not found:
        raise ValueError(_expected(path, 'this directory is none of these'))
      runs += [load_run(d) for d in found]
    else:
      raise ValueError(_expected(
          path, 'no such path' if not os.path.exists(path) else 'not one of these'))
  labels.tag_variants(runs)
  return runs, benchmarks
