"""The benchmark's Markdown tables: per method time, ratios, memory; the peer; the trace."""


def trace_table(result: dict) -> str:
  """Markdown: XLA:CPU ms per step by category (rows) for each traced method (columns)."""
  names = [n for n, r in result['methods'].items() if r.get('trace_s')]
  if not names:
    return ''
  cats = sorted({c for n in names for c in result['methods'][n]['trace_s']},
                key=lambda c: -max(result['methods'][n]['trace_s'].get(c, 0.0) for n in names))
  rows = ['| XLA:CPU ms per step | ' + ' | '.join(names) + ' |',
          '|---|' + '---|' * len(names)]
  for c in cats + ['total']:
    vals = [sum(result['methods'][n]['trace_s'].values()) if c == 'total'
            else result['methods'][n]['trace_s'].get(c, 0.0) for n in names]
    rows.append(f'| {c} | ' + ' | '.join(f'{1e3 * v:.0f}' for v in vals) + ' |')
  return '\n'.join(rows)


def memory_table(result: dict) -> str:
  rows = ['| method | actual step | XLA step MiB | x ERM | compile (s) |',
          '|---|---|---|---|---|']
  for name, r in result['methods'].items():
    rows.append(f'| {name} | {r.get("actual_step", "-")} | {_mib(r["xla_step_bytes"])} | '
                f'{_ratio(r.get("xla_step_ratio_to_erm"))} | {r["compile_time_s"]:.1f} |')
  return '\n'.join(rows)


def _mib(v):
  return '-' if v is None else f'{v / 2**20:.0f}'


def _ratio(v):
  return '-' if v is None else f'{v:.2f}'


def markdown_table(result: dict) -> str:
  """One row per method: time, ratios, compile, re-runs, memory (MiB and x ERM)."""
  peak = 'device_peak_bytes' if any('device_peak_bytes' in r for r in result['methods'].values()) \
      else 'peak_rss_bytes'
  peak_label = 'device peak' if peak == 'device_peak_bytes' else 'peak RSS'
  rows = [f'| method | actual step | step (s) | x ERM | x MW-Net | CPU (s) | compile (s) '
          f'| re-runs | XLA step MiB | x ERM | {peak_label} MiB | x ERM |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for name, r in result['methods'].items():
    rows.append(
        f'| {name} | {r.get("actual_step", "-")} | {r["step_time_s"]:.3f} | '
        f'{_ratio(r.get("ratio_to_erm"))} | '
        f'{_ratio(r.get("ratio_to_mwnet"))} | {r["cpu_time_s"]:.3f} | '
        f'{r["compile_time_s"]:.1f} | {r["reruns"]} | {_mib(r.get("xla_step_bytes"))} | '
        f'{_ratio(r.get("xla_step_ratio_to_erm"))} | {_mib(r.get(peak))} | '
        f'{_ratio(r.get(peak.replace("_bytes", "_ratio_to_erm")))} |')
  return '\n'.join(rows)


def peer_table(result: dict) -> str:
  """Ours against the PyTorch peer, per method (empty when no peer ran)."""
  rows = [r for r in result['methods'].items() if 'peer_step_time_s' in r[1]]
  if not rows:
    return ''
  threads = rows[0][1]['peer'].get('threads')
  out = ['| method | ours (s) | PyTorch peer (s) | peer / ours | ours CPU (s) | peer CPU (s) |',
         '|---|---|---|---|---|---|']
  for name, r in rows:
    out.append(f'| {name} | {r["step_time_s"]:.3f} | {r["peer_step_time_s"]:.3f} | '
               f'{r["peer_ratio"]:.2f} | {r["cpu_time_s"]:.3f} | {r["peer_cpu_time_s"]:.3f} |')
  return '\n'.join(out) + f'\n\n(Peer: {rows[0][1]["peer"].get("framework", "")}, ' \
      f'{threads} thread(s); peer / ours > 1 means ours is faster.)'


def amortised_note(result: dict) -> str:
  """One line per method with amortised meta updates (config.meta.update_every = k > 1): its
  step column is the mean of a k-step cycle, (t_meta + (k - 1) t_between) / k, of the two
  medians named here (`measurement.Timed.typical_step`); '' when no such method ran."""
  lines = [f'- {name}: mean of a {r.get("update_every", "k")}-step cycle, meta-update step '
           f'{r["step_time_meta_update_s"]:.3f} s, steps between updates '
           f'{r["step_time_between_updates_s"]:.3f} s (medians)'
           for name, r in result['methods'].items() if 'step_time_meta_update_s' in r]
  return '\n'.join(lines)


def title(result: dict) -> str:
  what = ('compiled step memory only (not timed)' if result.get('memory_only') else
          f'median of {result["timed_steps_per_method"]} steps')
  if result.get('traced'):
    what += ' (timed with per-instruction tracing on)'
  return f'{result["model"]}, batch {result["batch_size"]}, {result["device"]}, ' \
         f'JAX {result["jax"]}, {what}'


def provenance_line(made: dict) -> str:
  """One Markdown line: when, from which commit, by which command, with which JAX."""
  dirty = ' (with uncommitted changes)' if made.get('git_dirty') else ''
  return (f'Measured on {made["date"]} at commit {made["git_commit"]}{dirty}, famus_jax '
          f'{made["package_version"]}, JAX {made["jax"]}, {", ".join(made["devices"])}: '
          f'`{made["command"]}`')


def table(result: dict) -> str:
  """The Markdown table(s) that fit the result (timed, or memory only; peers if any)."""
  if result.get('memory_only'):
    return memory_table(result)
  parts = [markdown_table(result), amortised_note(result), peer_table(result)]
  return '\n\n'.join(p for p in parts if p)
