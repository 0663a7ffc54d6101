"""The import structure points one way, and the docs describe the tree that exists.

Layers, bottom to top: errors, the method catalogue, provenance and the config schema (modules
that import nothing from the package); data, models; meta; methods; famus, fsr, cotrain; the
method registry (it resolves the catalogue's factories in the method packages); train (its runs
build their method from the registry); presets and config_check; the Python API (api) and cli;
tools. A module may import only its own layer or those below; nothing imports lazily inside a
function (a loop hidden behind a lazy import); nothing imports the top-level `configs/` (a plain
install does not ship it). The entry points (cli, api, tools) validate a config
(config_check) before they hand it to the trainer.

The documents: the layout table of docs/development.md lists the package as it is, the
README's test commands are the ones CI runs, and no relative link in the README or docs/
points to a missing file.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'famus_jax'
LEVEL = {'errors': 0, 'catalogue': 0, 'provenance': 0, 'config': 0, 'data': 1, 'models': 1,
         'meta': 2, 'methods': 3, 'famus': 4, 'fsr': 4, 'cotrain': 4, 'method_registry': 5,
         'train': 6, 'presets': 7, 'config_check': 7, 'api': 8, 'cli': 8, 'tools': 9}
# (importing part, imported part) pairs allowed to point up a layer: none.
EXCEPTIONS = set()


def modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    yield path, path.relative_to(PACKAGE).parts[0].removesuffix('.py')


def imports(tree):
  """(module name, at top level) of every import of the module."""
  top = set(id(n) for n in tree.body)
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    else:
      continue
    for name in names:
      yield name, id(node) in top


def test_imports_point_down_and_are_at_top_level():
  problems = []
  for path, part in modules():
    if part == '__init__':
      continue
    for name, at_top in imports(ast.parse(path.read_text())):
      if name == 'configs' or name.startswith('configs.'):
        problems.append(f'{path}: imports the top-level configs/ ({name})')
      if not name.startswith('famus_jax.'):
        continue
      target = name.split('.')[1]
      if target not in LEVEL:
        continue
      if not at_top:
        problems.append(f'{path}: imports {name} inside a function')
      if LEVEL[target] > LEVEL[part] and (part, target) not in EXCEPTIONS:
        problems.append(f'{path} ({part}) imports {name} ({target}), a layer above it')
  assert not problems, '\n'.join(problems)


def test_the_shared_step_imports_no_particular_method():
  """The step, its contract and the multi-process helpers import no method's or co-training code:
  methods plug in through `Method`, runs through the step's batch preparation hook."""
  generic = ['train/step.py', 'train/distributed.py', 'methods/base.py', 'methods/preparation.py']
  for relative in generic:
    path = PACKAGE / relative
    for name, _ in imports(ast.parse(path.read_text())):
      parts = name.split('.')
      assert not (parts[0] == 'famus_jax' and len(parts) > 1
                  and parts[1] in ('cotrain', 'famus', 'fsr')), f'{path} imports {name}'


def test_no_file_cites_a_document_that_is_not_in_the_repo():
  for path in list(PACKAGE.rglob('*.py')) + [ROOT / 'README.md', ROOT / 'main.py']:
    for match in re.finditer(r'(\S*design\.md)', path.read_text()):
      cited = match.group(1).strip('`()[],.')
      assert cited.endswith('docs/design.md') and (ROOT / 'docs' / 'design.md').exists(), (
          f'{path} cites {cited}')
    assert '../shared' not in path.read_text(), path


def markdown_section(path, heading):
  """The text of `path` from the line `heading` to the next heading of the same level."""
  text = path.read_text()
  start = text.index(f'\n{heading}\n') + 1
  level = heading.split(' ')[0]
  end = text.find(f'\n{level} ', start + len(heading))
  return text[start:] if end < 0 else text[start:end]


def test_layout_table_matches_the_tree():
  section = markdown_section(ROOT / 'docs' / 'development.md', '## Layout')
  paths = re.findall(r'^\| `([^`]+)`', section, flags=re.M)
  assert len(paths) > 10
  for entry in paths:
    for part in entry.split(', '):
      assert (ROOT / part.strip('`')).exists(), part
  listed = {p.rstrip('/') for entry in paths for p in entry.split(', ')}
  for child in PACKAGE.iterdir():
    if child.name.startswith('_') or child.suffix not in ('', '.py'):
      continue
    assert f'famus_jax/{child.name}' in listed, (
        f'the layout table of docs/development.md misses famus_jax/{child.name}')


def test_readme_test_commands_are_the_ones_ci_runs():
  """Each command `.ci/run` marks as the README's is in the README's Tests section."""
  lines = (ROOT / '.ci' / 'run').read_text().splitlines()
  commands = [lines[i + 1].replace(' -q ', ' ') for i, line in enumerate(lines[:-1])
              if line.startswith('# README:')]
  assert len(commands) >= 2, commands
  section = markdown_section(ROOT / 'README.md', '## Tests')
  for command in commands:
    assert command in section.splitlines(), f'README "## Tests" lacks: {command}'


def test_relative_links_point_to_files_that_exist():
  problems = []
  for path in [ROOT / 'README.md', ROOT / 'results' / 'README.md'] + sorted(
      (ROOT / 'docs').glob('*.md')):
    for target in re.findall(r'\]\(([^)\s]+)\)', path.read_text()):
      if re.match(r'[a-z]+:', target):
        continue  # http(s):, mailto:
      file_part, _, anchor = target.partition('#')
      resolved = (path.parent / file_part).resolve() if file_part else path
      if not resolved.exists():
        problems.append(f'{path.relative_to(ROOT)}: {target}')
      elif anchor and resolved.suffix == '.md':
        headings = re.findall(r'^#+ (.+)$', resolved.read_text(), flags=re.M)
        if anchor not in {github_anchor(h) for h in headings}:
          problems.append(f'{path.relative_to(ROOT)}: {target} (no such heading)')
  assert not problems, '\n'.join(problems)


def github_anchor(heading):
  """The anchor GitHub gives a Markdown heading."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower().replace('`', ''))
  return text.replace(' ', '-')


def test_memorisation_tables_are_the_reports():
  """README.md and docs/results.md show the memorisation grid's table as the report tool wrote
  it (the summary table of results/memorisation_records/report.md), not a copy edited by hand."""
  report = (ROOT / 'results' / 'memorisation_records' / 'report.md').read_text().splitlines()
  start = next(i for i, line in enumerate(report) if line.endswith(': summary'))
  table = []
  for line in report[start + 2:]:
    if not line.startswith('|'):
      break
    table.append(line)
  assert len(table) > 10 and table[0].startswith('| method | clean images |')
  for doc in ('README.md', 'docs/results.md'):
    assert '\n'.join(table) + '\n\n' in (ROOT / doc).read_text(), doc


def test_configs_re_export_the_presets():
  from famus_jax import presets  # pylint: disable=import-outside-toplevel
  files = sorted(p.stem for p in (ROOT / 'configs').glob('*.py') if p.stem != 'base')
  assert files == presets.preset_names()
  for name in files:
    assert f'from famus_jax.presets.{name} import get_config' in (
        ROOT / 'configs' / f'{name}.py').read_text()


def test_one_docstring_style_and_line_length():
  """Prose docstrings (no Google Args:/Returns: sections) and lines of at most 100 columns."""
  problems = []
  for path, _ in modules():
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if len(line) > 100:
        problems.append(f'{path}:{number}: {len(line)} columns')
      if re.match(r'\s*(Args|Returns|Raises|Attributes):\s*$', line):
        problems.append(f'{path}:{number}: a Google-style section ({line.strip()})')
  assert not problems, '\n'.join(problems)


def test_readme_python_example_uses_the_public_api():
  """The README's Python block parses, and every famus_jax.NAME it uses is exported."""
  import famus_jax  # pylint: disable=import-outside-toplevel
  text = (ROOT / 'README.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
  assert blocks, 'the README has no Python example'
  used = set()
  for block in blocks:
    tree = ast.parse(block)
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == 'famus_jax'}
  assert {'Classifier', 'arrays_data', 'Learner', 'fit'} <= used
  assert all(name in famus_jax.__all__ for name in used), sorted(used - set(famus_jax.__all__))
