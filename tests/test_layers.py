"""The package's layers, written down once, and the import graph checked against them.

A module may import from its own layer or a layer below, never from one above; the graph of imports between the
package's modules has no cycle; no module imports another module's private (`_name`) names. Every import counts,
at module level or inside a function, except those under `if __name__ == '__main__':` (an entry point that hands
over to another module is not a dependency of the module)."""
import ast
from pathlib import Path

PKG = 'terrain_diffusion'
ROOT = Path(__file__).resolve().parents[1]/PKG

# bottom to top; the notebooks' folders follow the same order (nbs/00-06, data/, models/, trainers/, eval/)
LAYERS = [
    ('registry', ['terrain_diffusion.registry']),                         # named parts; imports nothing of the package
    ('config', ['terrain_diffusion.config']),                             # config files, schema, overrides
    ('data', ['terrain_diffusion.data']),                                 # DEMs, tile stores, datasets, units, metrics
    ('models', ['terrain_diffusion.models']),                             # networks and their samplers
    ('training', ['terrain_diffusion.training']),                         # the Trainer contract, EMA, checkpoints, the loop, td_train
    ('trainers', ['terrain_diffusion.trainers', 'terrain_diffusion.examples']),   # the four trainers, the tutorial's toy
    ('tools', ['terrain_diffusion.eval', 'terrain_diffusion.testing',    # export, generation, live view, conformance kit
               'terrain_diffusion.data.cli']),                         # td_data: its `encode` loads a trained autoencoder
]


def layer_of(module:str) -> int|None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + '.'):
                if best is None or len(p) > best[1]: best = (i, len(p))
    return None if best is None else best[0]


def modules():
    for path in sorted(ROOT.rglob('*.py')):
        if path.name == '_modidx.py': continue
        rel = path.relative_to(ROOT.parent).with_suffix('')
        parts = list(rel.parts)
        is_pkg = parts[-1] == '__init__'
        if is_pkg: parts = parts[:-1]
        yield '.'.join(parts), path, is_pkg


def _main_guard(node) -> bool:
    t = getattr(node, 'test', None)
    return (isinstance(node, ast.If) and isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == '__name__' and any(isinstance(c, ast.Constant) and c.value == '__main__' for c in t.comparators))


def imports(module:str, path:Path, is_pkg:bool):
    "(imported module, names taken from it, line) for every import of the package in `path`."
    out = []
    def visit(node):
        for child in ast.iter_child_nodes(node):
            if _main_guard(child): continue
            if isinstance(child, ast.Import):
                out.extend((a.name, [], child.lineno) for a in child.names if a.name.split(".")[0] == PKG)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split('.') if is_pkg else module.split('.')[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    target = '.'.join(base + ([child.module] if child.module else []))
                else: target = child.module or ''
                if target.split('.')[0] == PKG: out.append((target, [a.name for a in child.names], child.lineno))
            visit(child)
    visit(ast.parse(path.read_text()))
    return out


def graph():
    mods = {m: (p, pkg) for m, p, pkg in modules()}
    edges = {}
    for m, (p, pkg) in mods.items():
        for target, names, line in imports(m, p, pkg):
            # `from terrain_diffusion.data import datasets` imports the module terrain_diffusion.data.datasets
            subs = [f'{target}.{n}' for n in names if f'{target}.{n}' in mods]
            for t in (subs or [target]): edges.setdefault(m, []).append((t, names if not subs else [], line))
    return mods, edges


def test_every_module_has_a_layer():
    mods, _ = graph()
    missing = [m for m in mods if m != PKG and layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {missing}"


def test_imports_point_down():
    mods, edges = graph()
    up = []
    for m, targets in edges.items():
        for t, _, line in targets:
            lm, lt = layer_of(m), layer_of(t)
            if lm is not None and lt is not None and lt > lm:
                up.append(f"{m} (layer {LAYERS[lm][0]}) imports {t} (layer {LAYERS[lt][0]}) at line {line}")
    assert not up, 'imports that run upward:\n' + '\n'.join(up)


def test_no_import_cycle():
    mods, edges = graph()
    succ = {m: sorted({t for t, _, _ in edges.get(m, []) if t in mods and t != m}) for m in mods}
    state, stack, cycles = {}, [], []
    def dfs(m):
        state[m] = 'open'; stack.append(m)
        for t in succ[m]:
            if state.get(t) == 'open': cycles.append(stack[stack.index(t):] + [t])
            elif t not in state: dfs(t)
        stack.pop(); state[m] = 'done'
    for m in sorted(mods):
        if m not in state: dfs(m)
    assert not cycles, 'import cycles:\n' + '\n'.join(' -> '.join(c) for c in cycles)


def test_no_private_names_across_modules():
    _, edges = graph()
    bad = [f"{m} imports {n} from {t} (line {line})" for m, targets in edges.items()
           for t, names, line in targets if t != m for n in names if n.startswith('_')]
    assert not bad, 'private names imported across modules:\n' + '\n'.join(bad)


def test_the_checks_catch_what_they_claim(tmp_path):
    "The walker resolves relative imports and sees imports inside functions, and skips only the __main__ guard."
    p = tmp_path/'m.py'
    p.write_text("from ..training.train import TrainingRun\ndef f():\n    from terrain_diffusion.eval import live\n"
                 "if __name__ == '__main__':\n    from terrain_diffusion.training.cli import main\n")
    got = imports('terrain_diffusion.models.m', p, False)
    assert [(t, n) for t, n, _ in got] == [('terrain_diffusion.training.train', ['TrainingRun']), ('terrain_diffusion.eval', ['live'])]
    assert layer_of('terrain_diffusion.models.m') < layer_of('terrain_diffusion.training.train') < layer_of('terrain_diffusion.eval.live')
