#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, cannot be installed here).

Markdown cells are copied; code cells are shown as python blocks with their stored outputs, except cells whose
first line is a `#| hide` directive; stored pictures are written to docs/readme/ and linked. `--check` exits 1 when
README.md's text is stale (the pictures may differ from run to run, their names may not).
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

IMAGES = 'docs/readme'

def render(root: Path, images: dict|None=None) -> str:
    "README.md's text; the pictures it links are added to `images` (name -> bytes) when given."
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    exporter = MarkdownExporter()
    exporter.register_preprocessor(_DropHidden(), enabled=True)
    body, res = exporter.from_notebook_node(nb, resources={'output_files_dir': IMAGES})
    if images is not None: images.update(res.get('outputs', {}))
    return body.strip() + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parents[1]
    images = {}
    text = render(root, images)
    if '--check' in sys.argv:
        if (root/'README.md').read_text() != text or not all((root/n).is_file() for n in images):
            print('README.md is out of date: run python scripts/make_readme.py', file=sys.stderr); sys.exit(1)
    else:
        for name, data in images.items():
            (root/name).parent.mkdir(parents=True, exist_ok=True); (root/name).write_bytes(data)
        (root/'README.md').write_text(text)
