"""The conformance kit (`terrain_diffusion.testing.check_trainer`) on every registered trainer, on a plugin trainer from
another package and on a trainer written the reference's way; and on deliberately broken trainers, each caught by name.

Every run is tiny (a few optimiser steps of small models on a synthetic store); `pytest -s` shows the reports."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from conftest import run_cli, ROOT, TOY_CFG
from terrain_diffusion.testing import check_trainer, CONTRACT
from terrain_diffusion.registry import registry
from terrain_diffusion.examples.toy import ToyTrainer

QS = ROOT/'configs'/'quickstart'
NOISE = 'draws noise per micro-batch from the loop\'s per-micro-batch seed, so 2 micro-batches see other noise than 1 batch'

def _ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def tiny_teacher(path):
    "A tiny saved TrigFlow U-Net, the consistency trainer's teacher."
    from terrain_diffusion.models.unet import EDMUnet2D
    torch.manual_seed(0)
    net = EDMUnet2D(in_channels=1, out_channels=1, image_size=32, model_channels=8, model_channel_mults=(1, 2),
                    layers_per_block=1, channels_per_head=8)
    with torch.no_grad(): net.out_gain.fill_(1.0)
    net.save_pretrained(path)
    return path

def data(store): return {'train_dataset.path': str(store), 'val_dataset.path': str(store)}

def builtin_cases(store, tmp):
    "(name, config, overrides, kit keywords) for each built-in trainer: the quickstart configs, made tiny."
    return {
        'diffusion': (QS/'terrain.cfg', {**data(store), 'training.batch_size': 4, 'evaluation.val_batches': 1,
                      'evaluation.n_samples': 2, 'evaluation.sample_steps': 2, 'evaluation.max_reference': 8,
                      'ema.checkpoint_every_num_steps': 1}, dict(accumulation='steps_only', reason=NOISE)),
        'consistency': (QS/'consistency_terrain.cfg', {**data(store), 'model.main_path': str(tiny_teacher(tmp/'teacher')),
                        'training.batch_size': 4, 'evaluation.n_samples': 4, 'evaluation.val_batch_size': 4,
                        'ema.checkpoint_every_num_steps': 1}, dict(accumulation='steps_only', reason=NOISE)),
        'autoencoder': (QS/'autoencoder.yaml', {**data(store), 'training.batch_size': 4, 'evaluation.n_samples': 4,
                        'model.model_channels': 8, 'ema.checkpoint_every_num_steps': 1},
                        dict(accumulation='steps_only', reason='samples latents z = mu + sigma * eps per micro-batch')),
        'gan': (QS/'gan.cfg', {**data(store), 'training.batch_size': 4, 'evaluation.n_samples': 4, 'generator.model_channels': 8,
                'discriminator.model_channels': 8, 'ema.checkpoint_every_num_steps': 1},
                dict(accumulation='refused', reason='each step is a D step then a G step')),
        'toy': (TOY_CFG, {'ema.checkpoint_every_num_steps': 1}, dict(accumulation='steps_only', reason=NOISE)),
    }

@pytest.mark.parametrize('name', ['toy', 'diffusion', 'consistency', 'autoencoder', 'gan'])
def test_kit_passes_on_every_registered_trainer(name, store, tmp_path, capsys):
    cfg, overrides, kw = builtin_cases(store, tmp_path)[name]
    report = check_trainer(name, cfg, overrides, workdir=tmp_path/'kit', **kw)
    out = capsys.readouterr().out
    with capsys.disabled(): print('\n' + out)
    assert [c.point for c in report.checks] and {c.point for c in report.checks} == set(CONTRACT)
    for point in CONTRACT: assert f' {point} ' in out            # the printed report lists every point
    report.raise_for_failures()
    assert report['resume_bit_exact'].passed and report['state_survives_reload'].passed
    if name == 'gan': assert report['step_per_optimizer_step'].passed is None and 'refused' in report['accumulation'].detail

def test_every_registered_trainer_is_covered():
    from terrain_diffusion.registry import registered_names, import_builtins
    import_builtins()
    builtin = {n for n in registered_names('trainer') if registry.trainer.get(n).__module__.startswith('terrain_diffusion.')}
    assert builtin == {'toy', 'diffusion', 'consistency', 'autoencoder', 'gan'}, builtin

# ---- deliberately broken trainers: each fails the point it breaks, by name ----

TOY_KW = dict(accumulation='steps_only', reason=NOISE, verbose=False)

class StepPerMicroBatch(ToyTrainer):
    "Advances state['step'] on every micro-batch, not once per optimiser step."
    def train_step(self, state, batch):
        logs = super().train_step(state, batch)
        if not self.accelerator.sync_gradients: state['step'] += 1
        return logs

class EMANotCheckpointed(ToyTrainer):
    "Its EMA is in neither get_checkpoint_modules() nor its checkpoint files."
    def save_checkpoint_files(self, path): pass
    def load_checkpoint_files(self, path): pass

class NoValPrefix(ToyTrainer):
    "evaluate() keys without 'val/'."
    def evaluate(self): return {k.removeprefix('val/'): v for k, v in super().evaluate().items()}

class UnseededNoise(ToyTrainer):
    "Consumes a random number from a generator nobody seeds: the run cannot be replayed, so resume is not bit-exact."
    def __init__(self, *a):
        super().__init__(*a); self.rng = np.random.default_rng()
    def train_step(self, state, batch):
        return super().train_step(state, {'image': batch['image'] * (1 + 0.01 * float(self.rng.random()))})

BROKEN = [(StepPerMicroBatch, 'step_per_optimizer_step', "advanced state['step'] from 0 to 2", 'train_step'),
          (EMANotCheckpointed, 'state_survives_reload', 'trainer.ema', 'get_checkpoint_modules'),
          (NoValPrefix, 'evaluate_keys', "'loss' does not start with 'val/'", 'fix: evaluate'),
          (UnseededNoise, 'resume_bit_exact', 'differs', 'train_step')]

@pytest.mark.parametrize('cls,point,detail,fix', BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_kit_catches_a_broken_trainer(cls, point, detail, fix, tmp_path):
    report = check_trainer(cls, TOY_CFG, ['model.width=8'], workdir=tmp_path, **TOY_KW)     # overrides as td_train's -o
    print(report)
    assert point in report.failed, str(report)
    line = report[point].line()
    assert detail in line and fix in line, line
    assert report['builds'].passed and report['trains'].passed          # the rest of the contract still runs
    with pytest.raises(AssertionError, match=point): report.raise_for_failures()

def test_kit_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='needs a reason'): check_trainer('toy', TOY_CFG, accumulation='steps_only')
    (tmp_path/'mine.txt').write_text('a user file')
    with pytest.raises(ValueError, match='is not an empty folder'): check_trainer('toy', TOY_CFG, workdir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ['mine.txt']
    from terrain_diffusion.registry import RegistryNameError
    with pytest.raises(RegistryNameError, match="did you mean 'toy'"): check_trainer('tyo', TOY_CFG)

# ---- a trainer written the reference's way: accumulate() inside its own train_step ----

REFERENCE = '''
import torch
from torch.utils.data import Dataset
from terrain_diffusion.training.trainer import Trainer

class Points(Dataset):
    "Fixed regression points: a deterministic loss, so one update can be compared exactly."
    def __init__(self): g = torch.Generator().manual_seed(0); self.x = torch.randn(64, 1, 3, 3, generator=g)
    def __len__(self): return 64
    def __getitem__(self, i): return {"image": self.x[i]}

def make_points(): return Points()

class ReferenceStyleTrainer(Trainer):
    "Wraps its own step in accelerator.accumulate(model), as the reference implementation's trainers do."
    def __init__(self, config, resolved, accelerator, state):
        super().__init__(config, resolved, accelerator, state)
        torch.manual_seed(1)
        self.model = torch.nn.Conv2d(1, 2, 3)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.5)
    def train_step(self, state, batch):
        with self.accelerator.accumulate(self.model):
            loss = (self.model(batch["image"]) - 1).pow(2).mean()
            self.accelerator.backward(loss)
            logs = {"loss": loss.item()}
            if self.accelerator.sync_gradients:
                logs.update(self.optimizer_step(self.opt, self.model.parameters()))   # skips non-finite gradients
                state["step"] += 1; state["seen"] += self.images_per_step
        return logs
    def evaluate(self):
        with torch.no_grad(): return {"val/loss": float((self.model(Points().x[:8]) - 1).pow(2).mean())}
    def get_accelerate_modules(self): return (self.model, self.opt)
    def set_prepared_modules(self, prepared_modules): self.model, self.opt = prepared_modules
    def get_checkpoint_modules(self): return []
    def load_model_checkpoint(self, model_ckpt_path, strict=False):
        from safetensors.torch import load_file
        self.accelerator.unwrap_model(self.model).load_state_dict(load_file(str(model_ckpt_path) + "/model.safetensors"), strict=strict)
    def get_model_for_saving(self): return self.model
'''

SETUP = '''
from setuptools import setup
setup(name="td-reference-style", version="0.0.1", py_modules=["td_reference_style"],
      entry_points={"terrain_diffusion_trainers": ["reference_style = td_reference_style:ReferenceStyleTrainer"],
                    "terrain_diffusion_datasets": ["reference_points = td_reference_style:make_points"]})
'''

CFG = '''
[trainer_class]
@trainer = "reference_style"

[training]
batch_size = 4
epochs = 1
epoch_steps = 1

[logging]
save_dir = "{save_dir}"

[train_dataset]
@dataset = "reference_points"
'''

@pytest.fixture(scope='module')
def plugin(tmp_path_factory):
    "The reference-style trainer as a package of its own, installed into a folder only subprocesses see."
    d = tmp_path_factory.mktemp('plugin')
    src = d/'src'; src.mkdir()
    (src/'td_reference_style.py').write_text(REFERENCE); (src/'setup.py').write_text(SETUP)
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--no-index',
                        '--target', str(d/'site'), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (d/'ref.cfg').write_text(CFG.format(save_dir=d/'unused'))
    return d

def test_kit_on_a_plugin_trainer_of_another_package(plugin, tmp_path):
    "The kit from a shell, on the reference-style plugin: exact accumulation (SGD, deterministic loss), all points pass."
    r = run_cli(['--help'], module='terrain_diffusion.testing')
    assert r.returncode == 0 and 'TRAINER' in r.stdout.upper()
    r = subprocess.run([sys.executable, '-m', 'terrain_diffusion.testing', 'reference_style', str(plugin/'ref.cfg')],
                       cwd=tmp_path, env={**os.environ, 'PYTHONPATH': str(plugin/'site'), 'OMP_NUM_THREADS': '1'},
                       capture_output=True, text=True, timeout=300)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert '12 passed, 0 failed' in r.stdout and '2 micro-batches of 4 == 1 batch of 8 within rtol 1e-06' in r.stdout

def _weights(save_dir):
    w = load_file(str(Path(save_dir)/'latest_checkpoint'/'model.safetensors'))
    return torch.cat([w[k].flatten() for k in sorted(w)])

def test_reference_style_accumulation_under_td_train_and_torchrun(plugin, tmp_path):
    "2 micro-batches of 4 == 1 batch of 8 (SGD, rtol 1e-6) with td_train; 2 processes x 2 micro-batches of 4 == 1 batch of 16."
    env = {'PYTHONPATH': str(plugin/'site')}
    def td_train(name, batch, accum):
        _ok(run_cli(['td_train', '-c', str(plugin/'ref.cfg'), '-o', f'logging.save_dir={tmp_path/name}', '-o', f'training.batch_size={batch}',
                     '-o', f'training.gradient_accumulation_steps={accum}', '--progress', 'off'], env=env))
        return _weights(tmp_path/name)
    init = torch.cat([p.detach().flatten() for p in (torch.manual_seed(1), torch.nn.Conv2d(1, 2, 3))[1].state_dict().values()])
    big, acc = td_train('b8', 8, 1), td_train('a2x4', 4, 2)
    assert not torch.allclose(big, init)                               # the update is not trivially zero
    torch.testing.assert_close(acc, big, rtol=1e-6, atol=1e-7)
    assert json.loads((tmp_path/'a2x4'/'latest_checkpoint'/'train_state.json').read_text()) == {'epoch': 1, 'step': 1, 'seen': 8}
    big16 = td_train('b16', 16, 1)
    cmd = [str(Path(sys.executable).parent/'torchrun'), '--standalone', '--nproc_per_node', '2', '-m', 'terrain_diffusion.training.train',
           '-c', str(plugin/'ref.cfg'), '-o', f'logging.save_dir={tmp_path/"ddp"}', '-o', 'training.batch_size=4',
           '-o', 'training.gradient_accumulation_steps=2', '--progress', 'off']
    r = subprocess.run(cmd, env={**os.environ, 'OMP_NUM_THREADS': '1', **env}, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path/'ddp'/'latest_checkpoint'/'train_state.json').read_text()) == {'epoch': 1, 'step': 1, 'seen': 16}
    torch.testing.assert_close(_weights(tmp_path/'ddp'), big16, rtol=1e-6, atol=1e-7)
