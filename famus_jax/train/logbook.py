"""What a run writes for people: metrics.jsonl events and their aggregation.

metrics.jsonl holds one JSON object per line, each with 'event' ('train',
'eval', 'epoch', ...) and 'step' (the number of finished steps). On resume the
lines past the restored step are dropped so the file reads as one run.
"""

import json
import os

import numpy as np


def _jsonable(value):
  if isinstance(value, (np.floating, float)):
    return float(value)
  if isinstance(value, (np.integer, int, np.bool_, bool)):
    return value.item() if hasattr(value, 'item') else value
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


class MetricsLog:
  """Appends events to <workdir>/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def truncate_after(self, step: int) -> None:
    """Keep only events with event step <= `step` (used when resuming)."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get('step', 0) <= step]
    with open(self.path, 'w') as f:
      f.writelines(kept)

  def write(self, event: str, step: int, values: dict) -> None:
    record = {'event': event, 'step': int(step)}
    record.update({k: _jsonable(v) for k, v in values.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def read_metrics(workdir: str) -> list:
  """All events of a run, in order."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


class WindowMeans:
  """Running means of scalar step metrics between two log events.

  Non-scalar metrics (small arrays such as FaMUS's active-layer mask) are kept
  from the most recent step.
  """

  def __init__(self):
    self.sums, self.count, self.last_arrays = {}, 0, {}

  def add(self, metrics: dict) -> None:
    self.count += 1
    for key, value in metrics.items():
      value = np.asarray(value)
      if value.ndim == 0:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
      elif key != 'example_weights' and value.size <= 512:
        self.last_arrays[key] = value

  def flush(self) -> dict:
    out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
    out.update(self.last_arrays)
    self.sums, self.count, self.last_arrays = {}, 0, {}
    return out


def write_json(path: str, value: dict) -> None:
  """Write atomically (temp file + rename)."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump({k: _jsonable(v) for k, v in value.items()}, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
