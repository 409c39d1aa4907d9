#!/usr/bin/env python
"""Re-execute notebooks in place so that their committed outputs (pictures, tables) are refreshed, not hand-copied.

    python scripts/execute_notebooks.py nbs/index.ipynb nbs/eval/41_viz.ipynb   # chosen notebooks
    python scripts/execute_notebooks.py --default                                # the notebooks that carry pictures
    python scripts/execute_notebooks.py --timeout 1800 nbs/05_train.ipynb

Each notebook runs top to bottom in a fresh kernel of this interpreter (the venv's ipykernel), with the notebook's
own folder as working directory, like `nbdev_test`. A notebook that fails is left unchanged and the script exits 1
after trying the others. Afterwards `nbdev_clean` (on those notebooks) strips execution counts and metadata; it keeps outputs
(settings.ini `clear_all = False`), so CI's check that notebooks are clean and in sync with the library compares
sources, while outputs may differ from run to run. Figures are the inline backend's PNGs, at most 720 px wide
and re-encoded with a 128-colour palette, and widget state is not stored, to keep the repository small.
"""
import argparse, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The notebooks whose outputs show the work; trainers/* are run by the maintainer when their code changes.
DEFAULT = ['nbs/index.ipynb', 'nbs/03_ema.ipynb', 'nbs/05_train.ipynb',
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT/'nbs'/'data').glob('*.ipynb')),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT/'nbs'/'models').glob('*.ipynb')),
           'nbs/eval/41_viz.ipynb', 'nbs/eval/42_live.ipynb', 'nbs/eval/43_export.ipynb',
           'nbs/eval/44_ema_explorer.ipynb', 'nbs/eval/45_generate.ipynb',
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT/'nbs'/'tutorials').glob('*.ipynb'))]

def execute(path: Path, timeout: int, kernel: str) -> float:
    "Run `path` in place; return the seconds it took. Raises on the first failing cell (file left unchanged)."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    flags = _test_flags()
    skipped = [c for c in nb.cells if c.cell_type == 'code' and _skip(c.source, flags)]
    for c in skipped: c.metadata.setdefault('tags', []).append('skip-execution')
    t0 = time.perf_counter()
    # widget state is recorded while running (nbclient's Output-widget hook fails without it) and dropped below
    try: NotebookClient(nb, timeout=timeout, kernel_name=kernel, store_widget_state=True,
                       resources={'metadata': {'path': str(path.parent)}}).execute()
    finally:
        for c in skipped:
            c.metadata['tags'].remove('skip-execution')
            if not c.metadata['tags']: del c.metadata['tags']
    nb.metadata.pop('widgets', None)
    for cell in nb.cells:
        for out in cell.get('outputs', []):
            out.get('data', {}).pop('application/vnd.jupyter.widget-view+json', None)   # a live widget: its text stays
            if 'image/png' in out.get('data', {}): out['data']['image/png'] = small_png(out['data']['image/png'])
    nbformat.write(nb, path)
    return time.perf_counter() - t0

def _test_flags() -> set:
    "settings.ini's `tst_flags` (e.g. notest slow cuda): cells marked with one are skipped, as nbdev_test skips them."
    import configparser
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())

def _skip(src: str, flags: set = frozenset()) -> bool:
    "Cells nbdev_test does not run either: `#| eval: false`, `#| <test flag>`, and the closing `nbdev_export()` call."
    ds = [l.lstrip()[2:].strip() for l in src.splitlines() if l.lstrip().startswith('#|')]
    return any(d.replace(' ', '') == 'eval:false' or d.split(' ')[0] in flags for d in ds) or 'nbdev_export()' in src

def small_png(b64: str, colours: int = 128, max_width: int = 720) -> str:
    "The base64 PNG `b64` at most `max_width` px wide, re-encoded with a palette of `colours` (hillshades compress badly as RGBA), if smaller."
    import base64, io
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(b64))).convert('RGBA')
    im = Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im)   # transparent parts as the page shows them
    if im.width > max_width: im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
    buf = io.BytesIO()
    im.convert('RGB').quantize(colours, method=Image.Quantize.MEDIANCUT).save(buf, format='png', optimize=True)
    new = base64.b64encode(buf.getvalue()).decode()
    return new if len(new) < len(b64) else b64

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('notebooks', nargs='*', help='notebook paths (relative to the repository root or absolute)')
    p.add_argument('--default', action='store_true', help='run the notebooks listed in DEFAULT')
    p.add_argument('--timeout', type=int, default=1200, help='seconds one cell may run (default 1200)')
    p.add_argument('--kernel', default='python3', help="Jupyter kernel name (default python3, this venv's ipykernel)")
    a = p.parse_args(argv)
    names = list(a.notebooks) + (DEFAULT if a.default else [])
    if not names: p.error('name notebooks to execute, or --default')
    paths = [Path(n) if Path(n).is_absolute() else (Path.cwd()/n) for n in names]
    if missing := [str(n) for n, q in zip(names, paths) if not q.is_file() or q.suffix != '.ipynb']:
        print(f"not a notebook: {', '.join(missing)} (expected paths to .ipynb files)", file=sys.stderr); return 2
    env_defaults = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', WANDB_MODE='offline', WANDB_SILENT='true',
                        HF_HUB_OFFLINE='1')
    for k, v in env_defaults.items(): os.environ.setdefault(k, v)
    os.environ['MPLBACKEND'] = 'module://matplotlib_inline.backend_inline'   # an inherited Agg would drop every figure
    failed = []
    for q in paths:
        try: print(f'{q.relative_to(ROOT) if q.is_relative_to(ROOT) else q}: {execute(q.resolve(), a.timeout, a.kernel):.0f} s', flush=True)
        except Exception as e:
            failed.append(q); print(f'{q}: FAILED, left unchanged\n{str(e)[-2000:]}', file=sys.stderr, flush=True)
    for q in (q for q in paths if q not in failed):        # a failed notebook is left exactly as it was
        subprocess.run(['nbdev_clean', '--fname', str(q.resolve())], cwd=ROOT, check=True)
    if failed: print(f"{len(failed)} notebook(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
