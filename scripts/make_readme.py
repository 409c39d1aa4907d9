#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, cannot be installed here).

Markdown cells are copied; code cells are shown as python blocks with their stored text outputs,
except cells whose first line is a `#| hide` directive. `--check` exits 1 when README.md is stale.
"""
import sys
from pathlib import Path
import nbformat
from nbconvert.exporters import MarkdownExporter
from nbconvert.preprocessors import Preprocessor

class _DropHidden(Preprocessor):
    "Remove hidden cells and nbdev directives, and the frontmatter's `- key: value` lines."
    def preprocess(self, nb, resources):
        cells = []
        for c in nb.cells:
            lines = c.source.splitlines()
            if c.cell_type == 'code':
                if any(l.strip().replace(' ', '') in ('#|hide', '#|export', '#|exporti') for l in lines[:3]): continue
                c.source = '\n'.join(l for l in lines if not l.lstrip().startswith('#|'))
            cells.append(c)
        nb.cells = cells
        return nb, resources

def render(root: Path) -> str:
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    exporter = MarkdownExporter()
    exporter.register_preprocessor(_DropHidden(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    return body.strip() + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parents[1]
    text = render(root)
    if '--check' in sys.argv:
        if (root/'README.md').read_text() != text:
            print('README.md is out of date: run python scripts/make_readme.py', file=sys.stderr); sys.exit(1)
    else:
        (root/'README.md').write_text(text)
