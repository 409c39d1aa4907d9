"scripts/execute_notebooks.py: outputs are written into the notebook, skipped cells stay unrun, the result is nbdev-clean."
import json, subprocess, sys
from conftest import ROOT

def cell(src): return {'cell_type': 'code', 'execution_count': None, 'id': f'c{abs(hash(src)) % 10**8}', 'metadata': {},
                       'outputs': [], 'source': src}

def test_outputs_refreshed_and_skipped_cells_left_alone(tmp_path):
    nb = {'cells': [cell("from pathlib import Path\nprint('cwd', Path.cwd().name)"),
                    cell('#| eval: false\nraise SystemExit(2)'),
                    cell('#| cuda\nraise SystemExit(3)'),
                    cell('import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]); plt.show()')],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
          'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path/'sub').mkdir(); p = tmp_path/'sub'/'t.ipynb'; p.write_text(json.dumps(nb))
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'execute_notebooks.py'), str(p)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cells = json.loads(p.read_text())['cells']
    assert ''.join(cells[0]['outputs'][0]['text']) == 'cwd sub\n'           # run in the notebook's own folder
    assert cells[1]['outputs'] == [] and cells[1]['metadata'] == {}          # `#| eval: false` not run, no tag left
    assert cells[2]['outputs'] == []                                         # a test flag of settings.ini: not run
    assert any('image/png' in o.get('data', {}) for o in cells[3]['outputs'])  # figures kept as outputs
    assert all(c['execution_count'] is None for c in cells)                  # nbdev_clean ran

def test_a_failing_notebook_is_left_unchanged(tmp_path):
    p = tmp_path/'bad.ipynb'
    p.write_text(json.dumps({'cells': [cell("print('x')"), cell("raise ValueError('boom')")], 'metadata': {},
                             'nbformat': 4, 'nbformat_minor': 5}))
    before = p.read_text()
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'execute_notebooks.py'), str(p)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and 'boom' in r.stderr and p.read_text() == before
