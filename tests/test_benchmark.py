"""famus_jax.tools.benchmark: the protocol's bookkeeping, memory figures and table (tiny model)."""

import json
import os
import subprocess
import sys
import types

import pytest

from famus_jax import config as config_lib
from famus_jax.tools import benchmark
from famus_jax.tools.benchmark import measurement


@pytest.fixture(scope='module')
def result():
  return benchmark.benchmark('small_cnn', 10, ['erm', 'mwnet'], steps=2, image_size=8,
                             log=lambda s: None)


def test_ratios_and_memory_are_measured_in_one_run(result):
  erm, mwnet = result['methods']['erm'], result['methods']['mwnet']
  assert erm['ratio_to_erm'] == pytest.approx(1.0)
  assert mwnet['ratio_to_erm'] == pytest.approx(mwnet['step_time_s'] / erm['step_time_s'])
  assert mwnet['ratio_to_mwnet'] == pytest.approx(1.0)
  assert erm['timed_steps'] == mwnet['timed_steps'] == 2
  # The meta step holds the meta batch, the virtual parameters and the weight net too.
  assert mwnet['xla_step_bytes'] > erm['xla_step_bytes'] > 0
  assert mwnet['xla_step_ratio_to_erm'] == pytest.approx(
      mwnet['xla_step_bytes'] / erm['xla_step_bytes'])
  assert result['model'] == 'small_cnn' and result['batch_size'] == 10


def test_markdown_table_has_a_row_per_method(result):
  table = benchmark.markdown_table(result).splitlines()
  assert table[0].startswith('| method | actual step | step (s) |') and len(table) == 4
  assert table[2].startswith('| erm | ') and '| 1.00 |' in table[2]
  assert 'small_cnn, batch 10' in benchmark.title(result)


def test_peak_memory_child_reports_the_process_peak():
  out = benchmark.peak_memory_in_child('erm', 'small_cnn', 10, 8, settle=0, extra={},
                                       derived={})
  assert out['peak_rss_bytes'] >= out['rss_before_steps_bytes'] > 10 * 2**20
  json.dumps(out)


def test_memory_only_compiles_without_stepping(result):
  mem = benchmark.memory_only('small_cnn', 10, ['erm', 'mwnet'], image_size=8, log=lambda s: None)
  for name in ('erm', 'mwnet'):  # same compiled program as the timed run's
    assert mem['methods'][name]['xla_step_bytes'] == result['methods'][name]['xla_step_bytes']
  assert mem['methods']['erm']['xla_step_ratio_to_erm'] == 1.0
  assert 'not timed' in benchmark.title(mem)
  assert benchmark.table(mem).splitlines()[2].startswith('| erm | ')


def test_amortised_rows_report_the_memory_of_their_meta_update_step():
  """Whatever step the timing stopped at, an amortised row's memory is its meta-update step's:
  the program `memory_only` compiles at step 0."""
  timed = benchmark.benchmark('small_cnn', 10, ['erm', 'mwnet_every5'], steps=6, image_size=8,
                              log=lambda s: None)['methods']['mwnet_every5']
  mem = benchmark.memory_only('small_cnn', 10, ['erm', 'mwnet_every5'], image_size=8,
                              log=lambda s: None)['methods']['mwnet_every5']
  assert timed['xla_step_bytes'] == mem['xla_step_bytes']
  assert timed['xla_step_ratio_to_erm'] > 1.2  # the meta batch, w_hat and the weight net


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match='nope'):
    benchmark.benchmark('small_cnn', 10, ['nope'], steps=1, image_size=8)


def test_torch_peer_rows_are_timed_in_the_same_rounds():
  pytest.importorskip('torch')
  result = benchmark.benchmark('resnet8', 8, ['erm', 'mwnet'], steps=2, image_size=8,
                               log=lambda s: None, peers=['torch'], threads=1)
  for name in ('erm', 'mwnet'):
    r = result['methods'][name]
    assert r['peer']['method'] == name and r['peer_step_time_s'] > 0
    assert r['peer_ratio'] == pytest.approx(r['peer_step_time_s'] / r['step_time_s'])
  table = benchmark.table(result)
  assert '| mwnet |' in table.split('PyTorch peer')[1] and 'thread(s)' in table


def test_command_line_takes_schema_overrides(tmp_path):
  """python -m famus_jax.tools.benchmark: absl flags, --config.FIELD overrides for every
  method (here the network's width: a smaller step), an unknown field as one line."""
  def run(*flags):
    return subprocess.run([sys.executable, '-m', 'famus_jax.tools.benchmark', '--memory_only',
                           '--model=small_cnn', '--batch_size=10', '--image_size=8',
                           '--methods=erm', *flags], capture_output=True, text=True,
                          timeout=300, check=False)
  sizes = []
  for width, more in ((16, ()), (4, ('--config.famus.exact_meta_lr_scale=None',))):
    out = tmp_path / f'w{width}.json'
    proc = run(f'--config.width={width}', f'--out={out}', *more)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    sizes.append(result['methods']['erm']['xla_step_bytes'])
    markdown = (tmp_path / f'w{width}.md').read_text()
    assert markdown.startswith('small_cnn, batch 10')
    # Provenance: the checkout's commit (an independent git call) and the command line.
    made = result['provenance']
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          check=False).stdout.strip()
    assert made['git_commit'] == (head or None)
    assert f'--config.width={width}' in made['command'] and made['command'] in markdown
  assert sizes[1] < sizes[0]
  proc = run('--config.widht=4')
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr
  assert "error: --config.widht: the config has no field 'widht'" in proc.stderr


def test_amortised_rows_time_a_whole_cycle():
  """The method's update_every = k: (median meta-update step + (k - 1) median other step) / k."""
  timed = measurement.Timed.__new__(measurement.Timed)
  timed.name, timed.config = 'mwnet_every5', config_lib.get_config()
  timed.run = types.SimpleNamespace(method=types.SimpleNamespace(update_every=5))
  timed.counters = list(range(3, 13))  # meta updates at 5 and 10
  timed.wall = [1.0, 1.2, 5.0, 1.1, 0.9, 1.0, 1.0, 6.0, 1.0, 1.0]
  timed.cpu = [2 * t for t in timed.wall]
  out = timed.typical_step()
  assert out['step_time_meta_update_s'] == 5.5 and out['step_time_between_updates_s'] == 1.0
  assert out['step_time_s'] == pytest.approx((5.5 + 4 * 1.0) / 5)
  assert out['cpu_time_s'] == pytest.approx(2 * out['step_time_s'])
  # The table names the two medians under the row whose step column is their cycle's mean.
  result = {'methods': {'erm': {'step_time_s': 1.0}, 'mwnet_every5': out}}
  assert benchmark.amortised_note(result) == (
      '- mwnet_every5: mean of a 5-step cycle, meta-update step 5.500 s, steps between '
      'updates 1.000 s (medians)')
  assert benchmark.amortised_note({'methods': {'erm': {'step_time_s': 1.0}}}) == ''
  timed.counters = [1, 2, 3, 4]
  with pytest.raises(ValueError, match='mwnet_every5: the timed steps need both kinds'):
    timed.typical_step()
