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

# ---- fine-tuning loads (--model-ckpt) from the frozen checkpoints ----

def _gan_args(store, save_dir, *extra):
    ckpt = FROZEN/'format_1'/'gan'/'checkpoint'
    return ['td_train', '-c', str(ckpt/'config.json'), '--model-ckpt', str(ckpt), '-o', f'logging.save_dir={save_dir}',
            '-o', f'train_dataset.path={store}', '-o', f'val_dataset.path={store}', '-o', 'training.epochs=1',
            '-o', 'training.epoch_steps=2', '-o', 'evaluation.n_samples=4', '--progress', 'off', *extra]

def test_model_ckpt_with_other_input_channels_loads_what_matches(store, tmp_path):
    "The generator's input (latent) channels 8 -> 6: the two stem tensors are listed, the other six load, training runs."
    r = run_cli(_gan_args(store, tmp_path/'run', '-o', 'generator.latent_channels=6'))
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith('--model-ckpt:')]
    assert lines == ["--model-ckpt: skipped 'stem.weight': shape (4, 8, 3, 3) in the checkpoint, (4, 6, 3, 3) in the model",
                     "--model-ckpt: skipped 'stem_skip.weight': shape (4, 8, 1, 1) in the checkpoint, (4, 6, 1, 1) in the model",
                     f"--model-ckpt: loaded 6 of 8 tensors of the model from '{FROZEN/'format_1'/'gan'/'checkpoint'/'model.safetensors'}'"], r.stderr
    assert json.loads((tmp_path/'run'/'latest_checkpoint'/'train_state.json').read_text())['step'] == 2
    from terrain_diffusion.training.train import TrainingRun         # the loaded tensors are the checkpoint's, exactly
    ckpt = FROZEN/'format_1'/'gan'/'checkpoint'
    run = TrainingRun(ckpt/'config.json', {'logging.save_dir': str(tmp_path/'inproc'), 'train_dataset.path': str(store),
                                           'val_dataset.path': str(store), 'generator.latent_channels': 6},
                      model_ckpt=ckpt, progress='off')
    saved, live = load_file(str(ckpt/'model.safetensors')), run.trainer.G.state_dict()
    assert [k for k in saved if not torch.equal(saved[k], live[k]) if saved[k].shape == live[k].shape] == []
    assert {k for k in saved if saved[k].shape != live[k].shape} == {'stem.weight', 'stem_skip.weight'}
    run.close()

def test_model_ckpt_strict_refuses_a_mismatch_with_one_line(store, tmp_path):
    r = run_cli(_gan_args(store, tmp_path/'run', '-o', 'generator.latent_channels=6', '--model-ckpt-strict'))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert 'does not match the model exactly (strict loading)' in lines[0] and "'stem.weight'" in lines[0] and '1 more' in lines[0]
    assert not (tmp_path/'run').exists()
    r = run_cli(_gan_args(store, tmp_path/'exact', '--model-ckpt-strict'))              # an exact match is fine
    assert r.returncode == 0 and '--model-ckpt:' not in r.stderr, r.stderr

def test_model_ckpt_strict_needs_a_trainer_that_supports_it(tmp_path):
    "A plugin trainer whose load_model_checkpoint takes no `strict` (the built-ins, via EMATrainer, all do) is refused in one line."
    from terrain_diffusion.config import ConfigError
    from terrain_diffusion.examples.toy import ToyTrainer
    from terrain_diffusion.registry import registry
    from terrain_diffusion.training.train import TrainingRun
    class LooseToy(ToyTrainer):
        def load_model_checkpoint(self, path): return super().load_model_checkpoint(path)
    registry.trainer.register('test_loose_toy', func=LooseToy)
    ckpt = FROZEN/'format_1'/'toy'/'checkpoint'
    over = {'logging.save_dir': str(tmp_path), 'trainer_class.@trainer': 'test_loose_toy'}
    with pytest.raises(ConfigError, match="LooseToy.load_model_checkpoint has no 'strict' argument"):
        TrainingRun(ckpt/'config.json', over, model_ckpt=ckpt, model_ckpt_strict=True, progress='off')
    run = TrainingRun(ckpt/'config.json', {'logging.save_dir': str(tmp_path/'b')}, model_ckpt=ckpt, model_ckpt_strict=True,
                      progress='off')     # the tutorial's trainer builds on EMATrainer, whose loading takes `strict`
    run.close()

def test_finetune_reinit_redraws_the_named_submodules(store, tmp_path):
    "A trainer that names its log-variance head in `finetune_reinit` gets it re-drawn after --model-ckpt; the rest loads."
    from terrain_diffusion.trainers.diffusion import DiffusionTrainer
    from terrain_diffusion.registry import registry
    from terrain_diffusion.training.train import TrainingRun
    class FineTuned(DiffusionTrainer): finetune_reinit = ('logvar_linear',)
    registry.trainer.register('test_diffusion_reinit', func=FineTuned)
    ckpt = FROZEN/'format_1'/'diffusion'/'checkpoint'
    run = TrainingRun(ckpt/'config.json', {'logging.save_dir': str(tmp_path), 'train_dataset.path': str(store),
                                           'val_dataset.path': str(store), 'trainer_class.@trainer': 'test_diffusion_reinit'},
                      model_ckpt=ckpt, model_ckpt_strict=True, progress='off')
    saved, live = load_file(str(ckpt/'model.safetensors')), run.trainer.model.state_dict()
    assert [k for k in saved if not torch.equal(saved[k], live[k])] == ['logvar_linear.weight']
    run.close()
