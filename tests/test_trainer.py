"""The training loop end to end: summaries, resume after SIGKILL, data parallelism; the
TensorBoard event files beside metrics.jsonl."""

import glob
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from famus_jax import config_check
from famus_jax.errors import ConfigError
from famus_jax.presets import tiny
from famus_jax.tools.label_issues import restore_run
from famus_jax.train import tensorboard
from famus_jax.train.checkpoint import config_fingerprint
from famus_jax.train.logbook import read_metrics
from famus_jax.train.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, 'tests', 'run_child.py')


def run_child(workdir, overrides, *flags, env=None, check=True):
  cmd = [sys.executable, CHILD, str(workdir), json.dumps(overrides), *flags]
  proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                        cwd=ROOT, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f'child failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
  return proc


def last_json(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


def read_event_files(workdir):
  """The TensorBoard events of <workdir>/tensorboard, file by file in name order, each record's
  length and data checked against their masked CRC-32C (the TFRecord format)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=import-outside-toplevel
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))):
    data, at = open(path, 'rb').read(), 0
    while at < len(data):
      header = data[at:at + 8]
      (length,) = struct.unpack('Q', header)
      (header_crc,) = struct.unpack('I', data[at + 8:at + 12])
      body = data[at + 12:at + 12 + length]
      (body_crc,) = struct.unpack('I', data[at + 12 + length:at + 16 + length])
      assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body), path
      events.append((path, event_pb2.Event.FromString(body)))
      at += 16 + length
  return events


def tensorboard_scalars(workdir):
  """{tag: {step: value}} as TensorBoard shows them: a SessionLog START at step s drops the
  points at step s and after read before it (TensorBoard's purge of orphaned data)."""
  shown = {}
  for _, event in read_event_files(workdir):
    if event.HasField('session_log') and event.session_log.status == event.session_log.START:
      shown = {tag: {s: v for s, v in points.items() if s < event.step}
               for tag, points in shown.items()}
    for value in event.summary.value:
      shown.setdefault(value.tag, {})[event.step] = value.simple_value
  return shown


def metrics_scalars(workdir):
  """The scalars of metrics.jsonl's 'train' and 'eval' events, as float32 ({tag: {step: value}})."""
  expected = {}
  for e in read_metrics(str(workdir)):
    if e['event'] in ('train', 'eval'):
      for key, value in tensorboard.scalars(e).items():
        if key != 'step':
          expected.setdefault(f'{e["event"]}/{key}', {})[e['step']] = float(np.float32(value))
  return expected


@pytest.mark.parametrize('method', ['erm', 'mwnet', 'l2r'])
def test_tiny_run_writes_summary_and_metrics(tmp_path, method):
  config = tiny.get_config()
  config.method = method
  if method == 'erm':  # the unset period: the records name the one the run trains with
    config.meta.update_every = None
  elif method == 'l2r':  # a period L2R, without a meta model, ignores: recorded as 1
    config.meta.update_every = 5
  summary = train_and_evaluate(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['steps'] == config.num_steps == summary['steps']
  assert 0.0 <= on_disk['last_test_accuracy'] <= on_disk['best_test_accuracy'] <= 1.0
  assert on_disk['mean_step_time_s'] > 0
  assert 0.2 < on_disk['realised_noise_rate'] < 0.5  # 40% 'unif' noise flips ~36%
  assert on_disk['mean_weight_clean'] is not None and on_disk['mean_weight_noisy'] is not None
  if method == 'erm':
    assert on_disk['mean_weight_clean'] == pytest.approx(1.0)
  events = read_metrics(str(tmp_path))
  train_steps = [e['step'] for e in events if e['event'] == 'train']
  eval_steps = [e['step'] for e in events if e['event'] == 'eval']
  assert train_steps == [4, 8, 12] and eval_steps == [6, 12]
  # Report inputs: training time at each evaluation, logged weights, the method event.
  times = [e['train_time_s'] for e in events if e['event'] == 'eval']
  assert 0 < times[0] < times[1]
  weights = [e for e in events if e['event'] == 'weights']
  assert [e['step'] for e in weights] == list(range(0, 12, config.weights_log_every))
  for e in weights:
    assert len(e['weights']) == len(e['noisy']) == config.batch_size
    assert np.mean(e['weights']) == pytest.approx(1.0, abs=1e-3)
    assert set(e['noisy']) <= {0, 1}
  assert [e['method'] for e in events if e['event'] == 'method'] == [method]
  recorded = json.loads((tmp_path / 'config.json').read_text())
  assert recorded['method'] == method and recorded['meta']['update_every'] == 1
  fingerprint = json.loads((tmp_path / 'fingerprint.json').read_text())['config']
  assert fingerprint['meta.update_every'] == 1
  if method != 'erm':
    assert all('meta_loss' in e for e in events if e['event'] == 'train')


def test_learns_on_clean_synthetic_data(tmp_path):
  """A value check on the whole loop: clean synthetic data is learnt."""
  config = tiny.get_config()
  config.method = 'mwnet'
  config.noise_rate = 0.0
  config.num_steps = 100
  config.eval_every = 100
  config.log_every = 50
  config.lr.base = 0.05
  summary = train_and_evaluate(config, str(tmp_path))
  assert summary['last_test_accuracy'] > 0.5  # chance is 0.1


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
  """Also the TensorBoard files (config.tensorboard): they show metrics.jsonl's scalars."""
  overrides = {'method': 'mwnet', 'num_steps': 18, 'checkpoint_every': 6, 'eval_every': 6,
               'tensorboard': True}
  straight = last_json(run_child(tmp_path / 'straight', overrides).stdout)
  killed = run_child(tmp_path / 'resumed', overrides, '--kill-after-step', '10', check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not (tmp_path / 'resumed' / 'summary.json').exists()
  resumed = last_json(run_child(tmp_path / 'resumed', overrides).stdout)
  for key in ('best_test_accuracy', 'last_test_accuracy', 'last_test_loss', 'steps',
              'mean_weight_clean', 'mean_weight_noisy'):
    assert resumed[key] == straight[key], key
  ev_straight = read_metrics(str(tmp_path / 'straight'))
  ev_resumed = read_metrics(str(tmp_path / 'resumed'))
  assert [e['step'] for e in ev_resumed] == [e['step'] for e in ev_straight]
  for a, b in zip(ev_straight, ev_resumed):
    if a['event'] in ('train', 'eval'):
      loss_key = 'train_loss' if a['event'] == 'train' else 'test_loss'
      assert a[loss_key] == b[loss_key]
  # The per-example record of the last checkpoints (MW-Net's learned weights), bit for bit.
  records = [restore_run(str(tmp_path / name))[2].record for name in ('straight', 'resumed')]
  assert int(records[0].seen.sum()) == 18 * tiny.get_config().batch_size
  assert len(np.unique(records[0].weight_sum)) > 10
  for field in ('weight_sum', 'seen', 'last_pred'):
    np.testing.assert_array_equal(getattr(records[0], field), getattr(records[1], field))
  # TensorBoard: the scalars of every 'train' and 'eval' event at its step, nothing else; in
  # the resumed workdir a second file whose purge marker hides the killed attempt's step 8.
  for workdir in ('straight', 'resumed'):
    expected = metrics_scalars(tmp_path / workdir)
    assert {'train/train_loss', 'train/lr', 'train/epoch', 'eval/test_accuracy'} <= set(expected)
    assert sorted(expected['train/train_loss']) == [4, 8, 12, 16, 18]
    assert tensorboard_scalars(tmp_path / workdir) == expected, workdir
  files = {path for path, _ in read_event_files(tmp_path / 'resumed')}
  assert len(files) == 2
  train_loss_steps = [event.step for _, event in read_event_files(tmp_path / 'resumed')
                      for value in event.summary.value if value.tag == 'train/train_loss']
  assert train_loss_steps == [4, 8, 8, 12, 16, 18]


def test_tensorboard_may_be_switched_on_resume():
  """The event files copy metrics.jsonl, so config.tensorboard is not part of what a run is."""
  on, off = tiny.get_config(), tiny.get_config()
  on.tensorboard, off.tensorboard = True, False
  assert config_fingerprint(on.to_dict()) == config_fingerprint(off.to_dict())
  on.lr.base = off.lr.base * 2  # a field that is part of it, for contrast
  assert config_fingerprint(on.to_dict()) != config_fingerprint(off.to_dict())


def test_tensorboard_without_tensorboardx_is_one_line_naming_the_field(monkeypatch):
  config = tiny.get_config()
  config.tensorboard = True
  config_check.validate(config)
  monkeypatch.setattr(tensorboard, 'PACKAGE', 'tensorboardX_not_installed')
  with pytest.raises(ConfigError, match=r'config\.tensorboard=True .*pip install tensorboardX'
                     ) as err:
    config_check.validate(config)
  assert '\n' not in str(err.value)


def test_two_devices_give_the_same_losses_as_one(tmp_path):
  overrides = {'method': 'mwnet', 'num_steps': 8, 'log_every': 1, 'eval_every': 8}
  one = run_child(tmp_path / 'one', overrides)
  two = run_child(tmp_path / 'two', overrides,
                  env={'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')
                       + ' --xla_force_host_platform_device_count=2'})
  assert len(last_json(two.stdout)['devices']) == 2
  assert len(last_json(one.stdout)['devices']) == 1
  loss_one = [e['train_loss'] for e in read_metrics(str(tmp_path / 'one')) if e['event'] == 'train']
  loss_two = [e['train_loss'] for e in read_metrics(str(tmp_path / 'two')) if e['event'] == 'train']
  assert len(loss_one) == 8
  np.testing.assert_allclose(loss_two, loss_one, rtol=2e-4)
  meta_one = [e['meta_loss'] for e in read_metrics(str(tmp_path / 'one')) if e['event'] == 'train']
  meta_two = [e['meta_loss'] for e in read_metrics(str(tmp_path / 'two')) if e['event'] == 'train']
  np.testing.assert_allclose(meta_two, meta_one, rtol=2e-4)
