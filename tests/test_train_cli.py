"td_train as a user runs it: real subprocesses, real files."
import json, subprocess
import pytest
from conftest import run_cli

LAYOUT = {'model.safetensors', 'optimizer.bin', 'random_states_0.pkl', 'config.json', 'model_config',
          'wandb_run.json', 'train_state.json', 'manifest.json'}

def test_train_writes_layout_and_resumes(tmp_path, toy_args):
    r = run_cli(toy_args(epochs=1, steps=5))
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path/'run'/'latest_checkpoint'
    assert LAYOUT <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt/'train_state.json').read_text()) == {'epoch': 1, 'step': 5, 'seen': 40}
    assert json.loads((ckpt/'config.json').read_text())['trainer_class'] == {'@trainer': 'toy'}
    r = run_cli(toy_args('--ckpt', str(ckpt), epochs=3, steps=5))
    assert r.returncode == 0, r.stderr
    assert json.loads((ckpt/'train_state.json').read_text()) == {'epoch': 3, 'step': 15, 'seen': 120}
    steps = [json.loads(l)['step'] for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 15

def test_module_form_and_kimg_checkpoints(tmp_path, toy_args):
    args = toy_args('-o', 'logging.save_epochs=1', '--training.seed=3', epochs=2, steps=5)[1:]
    r = run_cli(args, module='terrain_diffusion.training.train')
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path/'run').iterdir())
    assert '0kimg_checkpoint' in names and 'latest_checkpoint' in names   # 40 images -> 0 kimg, 80 -> 0 kimg again

def test_debug_run_writes_nothing(tmp_path, toy_args):
    r = run_cli(toy_args('--debug-run', '-o', 'wandb.mode=offline', epochs=1, steps=3), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []

def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert 'Traceback' not in r.stderr
    for n in needles: assert n in lines[0], lines[0]

@pytest.mark.parametrize('extra, needles', [
    (['-o', 'training.epoch=3'], ["training.epoch", "did you mean 'training.epochs'"]),
    (['--trainng.epochs=3'], ["trainng", "did you mean 'training'"]),
    (['-o', 'trainer_class.@trainer=toyy'], ["'@trainer = toyy' is not registered", "did you mean 'toy'"]),
    (['-o', 'train_dataset.@dataset=toy_field'], ["'@dataset = toy_field' is not registered", "did you mean 'toy_fields'"]),
])
def test_bad_overrides(tmp_path, toy_args, extra, needles):
    _one_line_error(run_cli(toy_args(*extra)), *needles)
    assert not (tmp_path/'run').exists()

def test_bad_files(tmp_path, toy_args):
    base = ['td_train', '-o', f'logging.save_dir={tmp_path/"run"}']
    _one_line_error(run_cli([*base, '-c', str(tmp_path/'missing.cfg')]), 'missing.cfg', 'does not exist')
    (tmp_path/'bad.cfg').write_text('[training\nbatch_size = 3\n')
    _one_line_error(run_cli([*base, '-c', str(tmp_path/'bad.cfg')]), 'bad.cfg', 'malformed')
    (tmp_path/'bad.yaml').write_text('training: {batch_size: [1, 2}\n')
    _one_line_error(run_cli([*base, '-c', str(tmp_path/'bad.yaml')]), 'bad.yaml', 'malformed')
    (tmp_path/'notckpt').mkdir(); (tmp_path/'notckpt'/'weights.bin').write_bytes(b'x')
    _one_line_error(run_cli(toy_args('--ckpt', str(tmp_path/'notckpt'))), 'notckpt', 'is not a checkpoint')
    _one_line_error(run_cli(toy_args('--ckpt', str(tmp_path/'nowhere'))), 'nowhere', 'is not a checkpoint')
    assert not (tmp_path/'run').exists()

def test_no_terminal_never_waits(tmp_path, toy_args):
    assert run_cli(toy_args(epochs=1, steps=3)).returncode == 0
    # stdin closed (not a terminal) and latest_checkpoint exists: it must resume without asking
    r = run_cli(toy_args(epochs=2, steps=3), timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert 'resuming from' in r.stderr
    ckpt = tmp_path/'run'/'latest_checkpoint'
    assert json.loads((ckpt/'train_state.json').read_text())['step'] == 6
    r = run_cli(toy_args('--fresh', epochs=1, steps=3), timeout=120)
    assert r.returncode == 0 and json.loads((ckpt/'train_state.json').read_text())['step'] == 3

def test_sample_pictures_are_written(tmp_path, toy_args):
    r = run_cli(toy_args('-o', 'logging.samples_every_epochs=1', '-o', 'logging.n_samples=4', epochs=2, steps=5))
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path/'run'/'samples').glob('step_*.png'))
    assert [p.name for p in pngs] == ['step_000000005.png', 'step_000000010.png'], pngs
    assert all(p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' for p in pngs)
    r = run_cli(toy_args('--debug-run', '-o', 'logging.samples_every_epochs=1', epochs=1, steps=3), cwd=tmp_path/'run')
    assert r.returncode == 0 and len(list((tmp_path/'run'/'samples').glob('*.png'))) == 2
