"""Runs that meet each other or get stopped: one td_train per save folder (a lock a killed run cannot leave stuck),
and SIGTERM at random moments (inside checkpoint writes too) never costs a completed checkpoint, leaves nothing
hidden behind and changes no weight: the resumed run ends bit for bit where an uninterrupted one does (CPU)."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file
from conftest import run_cli
from test_safety import args, hidden

def start(cmd_args, env=None):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', **(env or {})}
    e.pop('TD_DEBUG', None)
    return subprocess.Popen([str(Path(sys.executable).parent/cmd_args[0]), *cmd_args[1:]], env=e, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

def logged(save: Path) -> list:
    f = save/'metrics.jsonl'
    if not f.exists(): return []
    out = []
    for l in f.read_text().splitlines():
        try: out.append(json.loads(l))
        except ValueError: pass                     # a line being written
    return out

def wait_for_step(p, save, step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if any(r['kind'] == 'train' and r['step'] >= step for r in logged(save)): return True
        time.sleep(0.005)
    return False

def no_duplicates(save):
    keys = [(r['kind'], r['step']) for r in logged(save)]
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1][:5]

def latest_step(save) -> int:
    f = save/'latest_checkpoint'/'train_state.json'
    return json.loads(f.read_text())['step'] if f.exists() else 0

def test_two_runs_on_one_folder_then_a_killed_holder(tmp_path):
    save = tmp_path/'run'
    common = ['-o', 'training.log_every_steps=5', '--progress', 'off']
    a = start(args(save, *common, epochs=2, steps=100))
    time.sleep(1)
    b = start(args(save, *common, epochs=2, steps=100))
    (_, err_a), (_, err_b) = a.communicate(timeout=600), b.communicate(timeout=600)
    done, refused = ((a, err_a), (b, err_b)) if a.returncode == 0 else ((b, err_b), (a, err_a))
    assert done[0].returncode == 0, done[1]
    lines = [l for l in refused[1].splitlines() if l.strip()]
    assert refused[0].returncode == 2 and len(lines) == 1 and 'Traceback' not in refused[1], refused[1]
    assert 'is in use by another td_train' in lines[0] and f'pid {done[0].pid} ' in lines[0], lines[0]
    assert latest_step(save) == 200
    no_duplicates(save)
    # the holder is killed: its lock file still names it, the next run takes the lock over and resumes
    c = start(args(save, *common, epochs=3, steps=100))
    assert wait_for_step(c, save, 220), c.stderr.read()
    c.send_signal(signal.SIGKILL); c.wait()
    assert f'pid {c.pid} ' in (save/'.td_train.lock').read_text()
    r = run_cli(args(save, *common, epochs=3, steps=100))
    assert r.returncode == 0, r.stderr
    assert 'took over the lock' in r.stderr and f'pid {c.pid} ' in r.stderr and 'resuming from' in r.stderr, r.stderr
    assert latest_step(save) == 300 and (save/'.td_train.lock').read_text() == ''
    no_duplicates(save)

STAGES = ['start', 'accelerate_state', 'custom_modules', 'trainer_files', 'config', 'before_manifest', 'manifest',
          'link_created', 'link_replaced', 'published']

def tensors(save: Path) -> dict:
    "The final weights, optimizer state and live EMA of a run, flat."
    ck = (save/'latest_checkpoint').resolve()
    out = {f'model.{k}': v for k, v in load_file(str(ck/'model.safetensors')).items()}
    for i, st in torch.load(ck/'optimizer.bin', weights_only=True)['state'].items():
        for k, v in st.items(): out[f'opt.{i}.{k}'] = torch.as_tensor(v)
    def walk(x, prefix):
        if isinstance(x, torch.Tensor): out[prefix] = x
        elif isinstance(x, dict): [walk(v, f'{prefix}.{k}') for k, v in x.items()]
        elif isinstance(x, (list, tuple)): [walk(v, f'{prefix}.{i}') for i, v in enumerate(x)]
    walk(torch.load(ck/'phema.pt', weights_only=True), 'ema')
    return out

def test_sigterm_at_ten_moments_then_resume_is_bit_exact(tmp_path):
    from terrain_diffusion.training.checkpoint import checkpoint_manifest
    E, S = 6, 8
    total, common = E * S, ['-o', 'training.log_every_steps=1', '-o', 'ema.checkpoint_every_num_steps=4', '--progress', 'off']
    r = run_cli(args(tmp_path/'straight', *common, epochs=E, steps=S)); assert r.returncode == 0, r.stderr
    save, rng, moments = tmp_path/'run', random.Random(13), []
    for i in range(10):
        cur = latest_step(save)
        kind = rng.choice(['startup', 'step', 'step', 'stage', 'stage'])
        if kind == 'stage' and cur // S + 1 >= E: kind = 'step'          # its write would be the run's last
        if kind == 'step' and cur + 6 >= total: kind = 'startup'
        env, target, n_signals = {}, None, 1
        if kind == 'startup': env = {'TD_FAULT_PAUSE': 'startup'}
        elif kind == 'stage':
            stage, n_signals = rng.choice(STAGES), rng.choice([1, 2])
            env = {'TD_FAULT_PAUSE': f'{stage}@1', 'TD_FAULT_PAUSE_SECONDS': '1'}
        else: target = cur + rng.randint(1, 4)
        p = start(args(save, *common, epochs=E, steps=S), env)
        if target is not None: assert wait_for_step(p, save, target), p.stderr.read()
        else:
            for line in p.stderr:
                if 'paused at' in line: break
        for _ in range(n_signals): p.send_signal(signal.SIGTERM); time.sleep(0.2)
        _, err = p.communicate(timeout=300)
        moments.append((kind, target if kind == 'step' else env.get('TD_FAULT_PAUSE'), n_signals, latest_step(save)))
        lines = [l for l in err.splitlines() if l.strip()]
        assert p.returncode == 143 and 'Traceback' not in err and lines[-1].startswith('td_train: terminated (SIGTERM)'), (moments, err)
        assert hidden(save) == [], (moments[-1], hidden(save))
        now = latest_step(save)
        assert now >= cur and (target is None or now >= target), moments      # at or after the last completed one
        if now: checkpoint_manifest(save/'latest_checkpoint')                  # complete, every hash right
    r = run_cli(args(save, *common, epochs=E, steps=S)); assert r.returncode == 0, r.stderr
    assert latest_step(save) == total and hidden(save) == []
    a, b = tensors(tmp_path/'straight'), tensors(save)
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), (k, moments)
    print(moments)
