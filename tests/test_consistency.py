"Consistency distillation through td_train: a saved teacher, a tiny store, train, evaluate, checkpoint, resume, bad input."
import json, math
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from conftest import run_cli, ROOT

CFG = ROOT/'configs'/'quickstart'/'consistency_base.cfg'

def td_train(argv, **kw):
    "Run td_train as a subprocess."
    return run_cli(['td_train', *argv], **kw)

def tiny_teacher(path, in_ch=7, channels=8, seed=0):
    "A tiny conditioned base EDMUnet2D (5 image + 2 coarse-map channels -> 5) with non-zero output, saved with save_pretrained."
    from terrain_diffusion.models.unet import EDMUnet2D
    torch.manual_seed(seed)
    net = EDMUnet2D(in_channels=in_ch, out_channels=5, image_size=8, model_channels=channels, model_channel_mults=(1, 2),
                    layers_per_block=1, channels_per_head=channels)
    with torch.no_grad(): net.out_gain.fill_(1.0)
    net.save_pretrained(path)
    return path

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp('consistency')
    r = run_cli(['td_data', 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '96', '--tile-size', '64',
                 '--stride', '32', '--val-fraction', '0.3', '--out', str(d/'s.h5'), '--no-progress'])
    assert r.returncode == 0, r.stderr
    from terrain_diffusion.models.autoencoder import EDMAutoencoder      # latents of an untrained tiny autoencoder
    from terrain_diffusion.data.store import encode_store
    torch.manual_seed(0)
    ae = EDMAutoencoder(image_size=64, model_channels=4, model_channel_mults=[1, 1, 1, 1], layers_per_block=1).eval()
    encode_store(d/'s.h5', ae, progress=False)
    return d, tiny_teacher(d/'teacher')

def args(d, teacher, save_dir, *extra, epochs=1, steps=2):
    return ['-c', str(CFG), '-o', f'model.main_path={teacher}', '-o', f'train_dataset.path={d/"s.h5"}',
            '-o', f'val_dataset.path={d/"s.h5"}', '-o', f'logging.save_dir={save_dir}', '-o', f'training.epochs={epochs}',
            '-o', f'training.epoch_steps={steps}', '-o', 'ema.checkpoint_every_num_steps=2', '--progress', 'lines', *extra]

def test_train_evaluate_checkpoint_resume(setup, tmp_path):
    d, teacher = setup
    run = tmp_path/'run'
    r = td_train(args(d, teacher, run, '-o', 'training.gradient_accumulation_steps=2'))
    assert r.returncode == 0, r.stderr
    ckpt = run/'latest_checkpoint'
    assert json.loads((ckpt/'train_state.json').read_text()) == {'epoch': 1, 'step': 2, 'seen': 16}
    assert {'model.safetensors', 'phema.pt', 'model_config'} <= {p.name for p in ckpt.iterdir()}
    recs = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines()]
    val = [x for x in recs if x['kind'] == 'val'][-1]
    for k in ('val/loss', 'val/g_norm', 'val/w1_slope', 'val/w1_elevation', 'val/spectrum_distance'):
        assert math.isfinite(val[k]), (k, val)
    # the checkpoint holds the student only (a teacher-shaped U-Net whose weights moved), not the teacher
    student, init = load_file(str(ckpt/'model.safetensors')), load_file(str(teacher/'model.safetensors'))
    assert set(student) == set(init)
    assert any(not torch.equal(student[k], init[k]) for k in init if not k.startswith('logvar'))
    assert json.loads((ckpt/'model_config'/'config.json').read_text())['model_channels'] == 8
    assert len(list((run/'phema').glob('*.safetensors'))) + len(list((run/'phema').glob('*.pt'))) >= 2
    r = td_train(args(d, teacher, run, '--ckpt', str(ckpt), '-o', 'training.gradient_accumulation_steps=2', epochs=2))
    assert r.returncode == 0, r.stderr
    assert json.loads((ckpt/'train_state.json').read_text()) == {'epoch': 2, 'step': 4, 'seen': 32}
    steps = [json.loads(l)['step'] for l in (run/'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4

def test_autoguidance_runs(setup, tmp_path):
    d, teacher = setup
    guide = tiny_teacher(tmp_path/'guide', channels=4, seed=1)
    r = td_train(args(d, teacher, tmp_path/'run', '-o', f'model.guide_path={guide}', '-o', 'model.guidance_scale=1.5',
                     '-o', 'evaluation.validate_epochs=0', steps=1))
    assert r.returncode == 0, r.stderr

def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    for n in needles: assert n in lines[0], lines[0]

def test_bad_teacher_and_guide(setup, tmp_path):
    d, teacher = setup
    (tmp_path/'notamodel').mkdir(); (tmp_path/'notamodel'/'weights.bin').write_bytes(b'x')
    _one_line_error(td_train(args(d, tmp_path/'notamodel', tmp_path/'run')), 'model.main_path', str(tmp_path/'notamodel'), 'not a saved model')
    _one_line_error(td_train(args(d, tmp_path/'missing', tmp_path/'run')), 'model.main_path', 'missing')
    guide = tiny_teacher(tmp_path/'guide2ch', in_ch=2, seed=1)
    _one_line_error(td_train(args(d, teacher, tmp_path/'run', '-o', f'model.guide_path={guide}', '-o', 'model.guidance_scale=2.0')),
                    str(guide), str(teacher), 'in_channels')
    assert not (tmp_path/'run').exists()

DDP_SCRIPT = '''
import sys, torch, torch.distributed as dist
import terrain_diffusion.trainers.consistency as tc
from terrain_diffusion.training.train import TrainingRun
cfg, teacher, store, save = sys.argv[1:5]
def weights(sync):
    if not sync: tc._sync_grads = lambda self, params: None          # what happens without the manual all-reduce
    run = TrainingRun(cfg, {'model.main_path': teacher, 'train_dataset.path': store, 'val_dataset.path': store,
                            'logging.save_dir': save + str(sync), 'training.epochs': 1, 'training.epoch_steps': 2,
                            'evaluation.validate_epochs': 0, 'logging.temp_save_epochs': 0}, progress='off', resume='fresh')
    student = run.trainer.accelerator.unwrap_model(run.trainer.model)
    w0 = torch.cat([p.detach().flatten() for p in student.parameters()])
    run.fit()
    w = torch.cat([p.detach().flatten() for p in student.parameters()])
    ws = [torch.zeros_like(w) for _ in range(dist.get_world_size())]; dist.all_gather(ws, w)
    return (ws[0] - ws[1]).abs().max().item(), (w - w0).abs().max().item()
synced, unsynced = weights(True), weights(False)
if dist.get_rank() == 0: print('RESULT', synced[0], synced[1], unsynced[0])
'''

def test_two_processes_keep_one_student(setup, tmp_path):
    "Under torchrun the JVP runs outside DDP's hooks: the trainer's own gradient all-reduce keeps the ranks identical."
    import os, subprocess, sys
    d, teacher = setup
    (tmp_path/'ddp.py').write_text(DDP_SCRIPT)
    cmd = [str(Path(sys.executable).parent/'torchrun'), '--standalone', '--nproc_per_node', '2', str(tmp_path/'ddp.py'), str(CFG), str(teacher),
           str(d/'s.h5'), str(tmp_path/'run')]
    r = subprocess.run(cmd, env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    diff_synced, moved, diff_unsynced = map(float, next(l for l in r.stdout.splitlines() if l.startswith('RESULT')).split()[1:])
    assert moved > 1e-4 and diff_synced == 0.0, (moved, diff_synced)
    assert diff_unsynced > 1e-6                      # the ranks see different data: without the all-reduce they drift apart
