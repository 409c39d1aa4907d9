"Repository invariants: notebooks and modules agree, every module imports alone, the loop knows no trainer."
import ast, json, re, subprocess, sys
from conftest import ROOT

PKG = ROOT/'terrain_diffusion'
MODULES = sorted(p for p in PKG.rglob('*.py') if p.name not in ('__init__.py', '_modidx.py'))

def test_every_module_names_an_existing_notebook():
    for p in MODULES:
        m = re.search(r'File to edit: (\S+)\.', p.read_text())
        assert m, f'{p} is not generated from a notebook'
        assert (p.parent/m.group(1)).resolve().exists(), f'{p} names a missing notebook {m.group(1)}'

def test_no_two_notebooks_share_a_module():
    seen = {}
    for nb in ROOT.glob('nbs/**/*.ipynb'):
        if any(part.startswith(('_', '.')) for part in nb.relative_to(ROOT/'nbs').parts): continue
        for c in json.loads(nb.read_text())['cells']:
            m = re.match(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
            if m:
                assert m.group(1) not in seen, f'{nb} and {seen[m.group(1)]} both export {m.group(1)}'
                seen[m.group(1)] = nb

def test_every_module_imports_in_a_fresh_interpreter():
    names = ['terrain_diffusion.' + '.'.join(p.relative_to(PKG).with_suffix('').parts) for p in MODULES]
    code = 'import importlib\n' + ''.join(f'importlib.import_module({n!r})\n' for n in names)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_pyflakes_finds_no_undefined_names():
    r = subprocess.run([sys.executable, '-m', 'pyflakes', str(PKG)], capture_output=True, text=True)
    bad = [l for l in r.stdout.splitlines() if 'undefined name' in l]
    assert not bad, '\n'.join(bad)

INTERFACE = {'train_step', 'evaluate', 'get_accelerate_modules', 'set_prepared_modules', 'get_checkpoint_modules',
             'load_model_checkpoint', 'get_model_for_saving', 'save_checkpoint_files', 'load_checkpoint_files',
             'save_model_config', 'sample', 'ema_sigma_rels'}

def test_the_loop_knows_no_trainer():
    src = (PKG/'training'/'train.py').read_text()
    tree = ast.parse(src)
    names = set()
    for ep in ROOT.glob('terrain_diffusion/**/*.py'):
        names |= set(re.findall(r"registry\.trainer\.register\(['\"](\w+)['\"]", ep.read_text()))
    assert names, 'no registered trainers found'
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in names, f'train.py mentions the trainer name {node.value!r}'
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'isinstance':
            assert 'trainer' not in ast.unparse(node).lower(), ast.unparse(node)
        if isinstance(node, ast.Attribute) and ast.unparse(node.value).endswith('.trainer'):
            assert node.attr in INTERFACE, f'train.py uses trainer.{node.attr}, which is not in the Trainer interface'
    assert 'trainer_type' not in src

def test_readme_commands_exist():
    "Every console script and file the README's commands name exists, and README.md is rendered from nbs/index.ipynb."
    import configparser, shlex
    text = (ROOT/'README.md').read_text()
    blocks = re.findall(r'```bash\n(.*?)```', text, re.S)
    assert blocks and 'td_train -c configs/quickstart/terrain.cfg' in blocks[0] and blocks[1].strip() == 'bash scripts/test.sh'
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    scripts = {l.split('=')[0].strip() for l in cfg['DEFAULT']['console_scripts'].split()}
    for block in blocks:
        for word in shlex.split(block.replace('\\\n', ' '), comments=True):
            if word.startswith('td_'): assert word in scripts, word
            if word.startswith(('configs/', 'scripts/')): assert (ROOT/word).exists(), word
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_pyflakes_finds_no_unused_imports():
    "No module imports a name it never uses (names a module lists in __all__ count as used: they are re-exported)."
    r = subprocess.run([sys.executable, '-m', 'pyflakes', *map(str, MODULES)], capture_output=True, text=True)
    bad = [l for l in r.stdout.splitlines() if 'imported but unused' in l]
    assert not bad, 'edit the notebook named at the top of each module, then nbdev_export:\n' + '\n'.join(bad)

# Files that live outside this repository (background notes of its authors). Built from pieces so that this test
# does not find itself.
OUTSIDE = ['MA' + 'TH', '../' + 'shared', 'DESIGN' + '.md', 'DESIGN' + ' §', 'STYLE' + '.md']
SCANNED = ['nbs', 'terrain_diffusion', 'configs', 'bench', 'tests', 'scripts', 'README.md']

def test_nothing_cites_a_file_outside_the_repository():
    "Every derivation the code relies on is written in a notebook; nothing points at a document a clone does not have."
    bad = []
    for top in SCANNED:
        root = ROOT/top
        files = [root] if root.is_file() else [p for p in root.rglob('*') if p.is_file()]
        for p in files:
            if '__pycache__' in p.parts or p.suffix not in ('.py', '.ipynb', '.cfg', '.yaml', '.yml', '.md', '.sh', '.txt', ''):
                continue
            try: text = p.read_text()
            except UnicodeDecodeError: continue
            for n, line in enumerate(text.splitlines(), 1):
                if any(s in line for s in OUTSIDE): bad.append(f'{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}')
    assert not bad, f'{len(bad)} references to files outside the repository:\n' + '\n'.join(bad[:40])
