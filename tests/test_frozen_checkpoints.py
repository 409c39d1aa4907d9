"""Checkpoints written by earlier versions load and resume: the specification's "load an old checkpoint and verify
training resumes".

tests/frozen/<format>/<trainer>/checkpoint/ are tiny checkpoints of every built-in trainer, made by
tests/frozen/make_frozen.py (one optimiser step) and committed; they are never regenerated in place. Each is loaded
(every weight as frozen), resumed and trained one more step, in-process and, for one, through `td_train`. A change that
breaks one of them must add a migration that this test exercises, never drop or rewrite the frozen files; a new
format adds a new folder (`python tests/frozen/make_frozen.py tests/frozen/format_N`)."""
import json, shutil
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from conftest import run_cli

FROZEN = Path(__file__).parent/'frozen'
BUILTIN = {'toy', 'diffusion', 'consistency', 'autoencoder', 'gan'}
CASES = sorted((p.parent.parent.name, p.parent.name) for p in FROZEN.glob('*/*/checkpoint'))

def test_every_builtin_trainer_has_a_frozen_checkpoint():
    formats = {f for f, _ in CASES}
    assert 'format_1' in formats
    for f in formats: assert {t for g, t in CASES if g == f} == BUILTIN, f

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp('store')/'s.h5'
    r = run_cli(['td_data', 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '256', '--tile-size', '128',
                 '--val-fraction', '0.3', '--out', str(out), '--no-progress'])
    assert r.returncode == 0, r.stderr
    return out

def overrides(fmt, trainer, ckpt, store, save_dir) -> dict:
    "Where the frozen run's data, teacher and save folder are now; one more epoch (of one step)."
    cfg = json.loads((ckpt/'config.json').read_text())
    ov = {'logging.save_dir': str(save_dir), 'training.epochs': 2, 'logging.samples_every_epochs': 0,
          'evaluation.validate_epochs': 0}
    for sec in ('train_dataset', 'val_dataset'):
        if 'path' in cfg.get(sec, {}): ov[f'{sec}.path'] = str(store)
    if trainer == 'consistency': ov['model.main_path'] = str(FROZEN/fmt/'consistency'/'teacher')
    return ov

@pytest.mark.parametrize('fmt,trainer', CASES, ids=[f'{f}-{t}' for f, t in CASES])
def test_frozen_checkpoint_loads_and_resumes(fmt, trainer, store, tmp_path):
    from terrain_diffusion.training.train import TrainingRun
    ckpt = shutil.copytree(FROZEN/fmt/trainer/'checkpoint', tmp_path/'frozen')     # the committed files stay untouched
    frozen = json.loads((ckpt/'train_state.json').read_text())
    run = TrainingRun(ckpt/'config.json', overrides(fmt, trainer, ckpt, store, tmp_path/'run'), ckpt=ckpt, progress='off')
    try:
        assert run.state == frozen and frozen['step'] == 1
        models = [m for m in run.trainer.get_accelerate_modules() if isinstance(m, torch.nn.Module)]
        for i, m in enumerate(models):                                     # every weight as frozen
            saved = load_file(str(ckpt/('model.safetensors' if i == 0 else f'model_{i}.safetensors')))
            live = run.accelerator.unwrap_model(m).state_dict()
            assert saved.keys() == live.keys()
            for k in saved: assert torch.equal(saved[k], live[k]), (trainer, i, k)
        run.fit()
        assert run.state['step'] == 2 and run.state['epoch'] == 2
        new = load_file(str(tmp_path/'run'/'latest_checkpoint'/'model.safetensors'))
        old = load_file(str(ckpt/'model.safetensors'))
        assert all(torch.isfinite(v).all() for v in new.values() if v.is_floating_point())
        assert any(not torch.equal(new[k], old[k]) for k in old)           # it trained
    finally: run.close()

def test_frozen_toy_resumes_through_td_train(tmp_path):
    ckpt = shutil.copytree(FROZEN/'format_1'/'toy'/'checkpoint', tmp_path/'frozen')
    r = run_cli(['td_train', '-c', str(ckpt/'config.json'), '--ckpt', str(ckpt), '-o', f'logging.save_dir={tmp_path/"run"}',
                 '-o', 'training.epochs=2', '--progress', 'off'])
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/'run'/'latest_checkpoint'/'train_state.json').read_text())['step'] == 2
