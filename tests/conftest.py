import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY_CFG = ROOT/'configs'/'examples'/'toy.cfg'

def run_cli(args, cwd=None, timeout=300, env=None, stdin=subprocess.DEVNULL, module=None):
    "Run a console script (or `python -m module`) as a real subprocess."
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', **(env or {})}
    e.pop('TD_DEBUG', None)
    cmd = [sys.executable, '-m', module, *args] if module else [str(Path(sys.executable).parent/args[0]), *args[1:]]
    return subprocess.run(cmd, cwd=cwd, env=e, stdin=stdin, capture_output=True, text=True, timeout=timeout)

@pytest.fixture
def toy_args(tmp_path):
    "td_train arguments for a tiny toy run saving into tmp_path/run."
    def make(*extra, epochs=2, steps=5):
        return ['td_train', '-c', str(TOY_CFG), '-o', f'logging.save_dir={tmp_path/"run"}', '-o', f'training.epochs={epochs}',
                '-o', f'training.epoch_steps={steps}', '--progress', 'lines', *extra]
    return make


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    "A small synthetic tile store (128-px tiles, 30 % validation) shared by a test module; a module may define its own."
    out = tmp_path_factory.mktemp('store')/'s.h5'
    r = run_cli(['td_data', 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '256', '--tile-size', '128',
                 '--val-fraction', '0.3', '--out', str(out), '--no-progress'])
    assert r.returncode == 0, r.stderr[-2000:]
    return out
