"""A loop you can trust with a week of GPU time: exact resume, crash-safe checkpoints, safe loading, NaN policy.

All with the tutorial trainer (`toy`) through real `td_train` subprocesses."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file
from conftest import run_cli, TOY_CFG

def ckpt_tensors(ckpt: Path) -> dict:
    "Everything a resume restores, as flat name -> tensor."
    ckpt = ckpt.resolve()
    out = {f'model.{k}': v for k, v in load_file(str(ckpt/'model.safetensors')).items()}
    opt = torch.load(ckpt/'optimizer.bin', weights_only=True)
    for i, st in opt['state'].items():
        for k, v in st.items(): out[f'opt.{i}.{k}'] = torch.as_tensor(v)
    ema = torch.load(ckpt/'phema.pt', weights_only=True)
    def walk(x, prefix):
        if isinstance(x, torch.Tensor): out[prefix] = x
        elif isinstance(x, dict): [walk(v, f'{prefix}.{k}') for k, v in x.items()]
        elif isinstance(x, (list, tuple)): [walk(v, f'{prefix}.{i}') for i, v in enumerate(x)]
    walk(ema, 'ema')
    return out

def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k

def args(save_dir, *extra, epochs=2, steps=10):
    return ['td_train', '-c', str(TOY_CFG), '-o', f'logging.save_dir={save_dir}', '-o', f'training.epochs={epochs}',
            '-o', f'training.epoch_steps={steps}', '-o', 'ema.checkpoint_every_num_steps=4', '--progress', 'lines', *extra]

def test_resume_is_bit_exact(tmp_path):
    assert run_cli(args(tmp_path/'straight', epochs=2)).returncode == 0
    r = run_cli(args(tmp_path/'resumed', epochs=1)); assert r.returncode == 0, r.stderr
    r = run_cli(args(tmp_path/'resumed', '--ckpt', str(tmp_path/'resumed'/'latest_checkpoint'), epochs=2)); assert r.returncode == 0, r.stderr
    a, b = ckpt_tensors(tmp_path/'straight'/'latest_checkpoint'), ckpt_tensors(tmp_path/'resumed'/'latest_checkpoint')
    assert any(k.startswith('ema.') for k in a) and any(k.startswith('opt.') for k in a)
    assert_same(a, b)
    # the EMA snapshots on disk are the same files too
    snaps = lambda d: {p.name: load_file(str(p)) for p in sorted((d/'phema').glob('*.safetensors'))}
    sa, sb = snaps(tmp_path/'straight'), snaps(tmp_path/'resumed')
    assert sa.keys() == sb.keys() and len(sa) > 0
    for n in sa: assert_same(sa[n], sb[n])

def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path):
    steps = 150
    assert run_cli(args(tmp_path/'straight', '-o', 'training.log_every_steps=5', epochs=3, steps=steps)).returncode == 0
    save = tmp_path/'killed'
    e = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [str(Path(sys.executable).parent/'td_train'), *args(save, '-o', 'training.log_every_steps=5', epochs=3, steps=steps)[1:]]
    p = subprocess.Popen(cmd, env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, killed_at = time.time() + 240, None
    while time.time() < deadline and p.poll() is None:
        log = save/'metrics.jsonl'
        if log.exists():
            done = [json.loads(l)['step'] for l in log.read_text().splitlines() if l.strip()]
            if done and done[-1] >= steps + 20:          # well inside epoch 2
                p.send_signal(signal.SIGKILL); killed_at = done[-1]; break
        time.sleep(0.01)
    p.wait()
    assert killed_at is not None and killed_at < 2 * steps, 'the run was not killed inside epoch 2'
    assert json.loads((save/'latest_checkpoint'/'train_state.json').read_text())['step'] == steps
    r = run_cli(args(save, '-o', 'training.log_every_steps=5', epochs=3, steps=steps))   # no terminal: resumes by itself
    assert r.returncode == 0, r.stderr
    assert_same(ckpt_tensors(tmp_path/'straight'/'latest_checkpoint'), ckpt_tensors(save/'latest_checkpoint'))
    steps_logged = [json.loads(l)['step'] for l in (save/'metrics.jsonl').read_text().splitlines() if json.loads(l)['kind'] == 'train']
    assert steps_logged == sorted(set(steps_logged))        # what the killed run logged after its checkpoint was dropped

STAGES = ['start', 'accelerate_state', 'custom_modules', 'trainer_files', 'config', 'before_manifest', 'manifest',
          'link_created', 'link_replaced', 'published']

def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    from terrain_diffusion.training.train import TrainingRun
    base = tmp_path/'base'
    assert run_cli(args(base, epochs=1, steps=4)).returncode == 0
    e = {**os.environ, 'OMP_NUM_THREADS': '1'}
    for stage in STAGES:
        save = tmp_path/stage
        shutil.copytree(base, save, symlinks=True)
        cmd = [str(Path(sys.executable).parent/'td_train'), *args(save, epochs=2, steps=4)[1:]]
        p = subprocess.Popen(cmd, env={**e, 'TD_FAULT_PAUSE': f'{stage}@1'}, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in p.stderr:
            if 'paused at checkpoint stage' in line: break
        p.send_signal(signal.SIGKILL); p.wait()
        latest = save/'latest_checkpoint'
        run = TrainingRun(TOY_CFG, {'logging.save_dir': str(save)}, ckpt=latest, progress='off')
        expected = 8 if STAGES.index(stage) >= STAGES.index('link_replaced') else 4
        assert run.state['step'] == expected, (stage, run.state)
        run.close()

def test_planted_pickle_is_not_run(tmp_path):
    save = tmp_path/'run'
    assert run_cli(args(save, epochs=1, steps=3)).returncode == 0
    ckpt = (save/'latest_checkpoint').resolve()
    marker = tmp_path/'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    torch.save({'state': Evil()}, ckpt/'phema.pt')
    man = json.loads((ckpt/'manifest.json').read_text())       # a consistent manifest, as an attacker would write
    man['files']['phema.pt'] = (ckpt/'phema.pt').stat().st_size
    (ckpt/'manifest.json').write_text(json.dumps(man))
    r = run_cli(args(save, '--ckpt', str(save/'latest_checkpoint'), epochs=2, steps=3))
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'phema.pt' in lines[0] and 'Traceback' not in r.stderr, r.stderr
    assert not marker.exists()

def test_truncated_checkpoint_is_refused(tmp_path):
    save = tmp_path/'run'
    assert run_cli(args(save, epochs=1, steps=3)).returncode == 0
    f = (save/'latest_checkpoint').resolve()/'optimizer.bin'
    f.write_bytes(f.read_bytes()[:100])
    r = run_cli(args(save, '--ckpt', str(save/'latest_checkpoint')))
    assert r.returncode == 2 and 'optimizer.bin' in r.stderr and 'damaged' in r.stderr, r.stderr

def test_nan_is_counted_and_skipped(tmp_path):
    save = tmp_path/'skip'
    r = run_cli(args(save, '-o', 'debug.nan_at_step=3', '-o', 'training.log_every_steps=5', epochs=1, steps=10))
    assert r.returncode == 0, r.stderr
    status = [l for l in r.stderr.splitlines() if l.startswith('td_train step')]
    assert 'nonfinite 1' in status[0] and 'nonfinite 0' in status[1], status
    logs = [json.loads(l) for l in (save/'metrics.jsonl').read_text().splitlines()]
    train = [l for l in logs if l['kind'] == 'train']
    assert train[0]['nonfinite'] == 1 and train[0]['skipped'] == 1 and train[1]['nonfinite'] == 0
    import math
    assert math.isnan(train[0]['loss'])                      # a plain mean: the NaN shows, it is not averaged away
    w = load_file(str(save/'latest_checkpoint'/'model.safetensors'))
    assert all(torch.isfinite(v).all() for v in w.values())

def test_nan_stop_policy_keeps_the_good_checkpoint(tmp_path):
    save = tmp_path/'stop'
    assert run_cli(args(save, epochs=1, steps=4)).returncode == 0
    before = ckpt_tensors(save/'latest_checkpoint')
    r = run_cli(args(save, '-o', 'debug.nan_at_step=6', '-o', 'training.nonfinite_policy="stop"', '-o', 'training.max_nonfinite=1',
                     epochs=2, steps=4))
    assert r.returncode == 1 and 'non-finite' in r.stderr, r.stderr
    assert_same(before, ckpt_tensors(save/'latest_checkpoint'))
