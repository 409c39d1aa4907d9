"Gradient accumulation equals one big batch; two processes under torchrun log once, checkpoint once, and resume in one."
import json, os, subprocess, sys
from pathlib import Path
import torch
from torch.utils.data import Dataset
from conftest import run_cli, TOY_CFG
from terrain_diffusion.registry import registry
from terrain_diffusion.training.trainer import Trainer
from terrain_diffusion.training.train import TrainingRun

class Points(Dataset):
    "Fixed regression points: a deterministic loss, so one update can be compared exactly."
    def __init__(self): g = torch.Generator().manual_seed(0); self.x = torch.randn(32, 1, 2, 2, generator=g)
    def __len__(self): return 32
    def __getitem__(self, i): return {'image': self.x[i]}

@registry.trainer.register('test_sgd')
class SGDTrainer(Trainer):
    def __init__(self, config, resolved, accelerator, state):
        super().__init__(config, resolved, accelerator, state)
        torch.manual_seed(1)
        self.model = torch.nn.Conv2d(1, 1, 2)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.5)
        self.updates = 0
    def train_step(self, state, batch):
        loss = (self.model(batch['image']) - 1).pow(2).mean()
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients:
            self.optimizer_step(self.opt, self.model.parameters()); self.updates += 1
            state['step'] += 1; state['seen'] += self.images_per_step
        return {'loss': loss.item()}
    def evaluate(self): return {}
    def get_accelerate_modules(self): return (self.model, self.opt)
    def set_prepared_modules(self, p): self.model, self.opt = p
    def get_checkpoint_modules(self): return []
    def load_model_checkpoint(self, path): pass
    def get_model_for_saving(self): return self.model

registry.dataset.register('test_points', func=Points)

def _one_update(batch, accum, tmp):
    cfg = {'trainer_class': {'@trainer': 'test_sgd'}, 'train_dataset': {'@dataset': 'test_points'},
           'training': {'batch_size': batch, 'gradient_accumulation_steps': accum, 'epochs': 1, 'epoch_steps': 1},
           'logging': {'save_dir': str(tmp), 'temp_save_epochs': 0}}
    run = TrainingRun(cfg, progress='off'); run.fit()
    assert run.state == {'epoch': 1, 'step': 1, 'seen': batch * accum} and run.trainer.updates == 1
    return torch.cat([p.detach().flatten() for p in run.trainer.model.parameters()])

def test_accumulation_equals_one_big_batch(tmp_path):
    big = _one_update(8, 1, tmp_path/'a')
    for k, b in ((2, 4), (4, 2), (8, 1)):
        torch.testing.assert_close(_one_update(b, k, tmp_path/f'k{k}'), big, rtol=1e-6, atol=1e-7)
    torch.manual_seed(1)   # sanity: the update is not trivially zero
    assert not torch.allclose(torch.cat([p.flatten() for p in torch.nn.Conv2d(1, 1, 2).parameters()]), big)

def test_toy_ema_and_steps_advance_once_per_optimizer_step(tmp_path):
    run = TrainingRun(TOY_CFG, {'logging.save_dir': str(tmp_path), 'training.gradient_accumulation_steps': 3,
                                'training.epoch_steps': 4, 'training.epochs': 1, 'logging.temp_save_epochs': 0}, progress='off')
    run.fit()
    assert run.state['step'] == 4 and run.trainer.ema.step == 4 and run.state['seen'] == 4 * 3 * 8

def _torchrun(args, env=None):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    cmd = [str(Path(sys.executable).parent/'torchrun'), '--standalone', '--nproc_per_node', '2', '-m', 'terrain_diffusion.training.train', *args]
    return subprocess.run(cmd, env=e, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)

def test_two_processes(tmp_path):
    save = tmp_path/'ddp'
    base = ['-c', str(TOY_CFG), '-o', f'logging.save_dir={save}', '-o', 'training.epoch_steps=4', '-o', 'training.log_every_steps=2',
            '-o', 'logging.save_epochs=1', '--progress', 'lines']
    r = _torchrun([*base, '-o', 'training.epochs=1'])
    assert r.returncode == 0, r.stderr[-3000:]
    status = [l for l in r.stderr.splitlines() if l.startswith('td_train step')]
    assert len(status) == 2, status                                  # one progress display, from the main process
    visible = sorted(p.name for p in save.iterdir() if not p.name.startswith('.'))
    assert visible == ['0kimg_checkpoint', 'latest_checkpoint', 'metrics.jsonl'], visible   # one checkpoint per save
    own = ('.td_train.lock', '.td_save_id')                                                 # the folder's lock and id
    assert len([p for p in save.iterdir() if p.name.startswith('.') and p.name not in own]) == 1   # the folder latest_checkpoint links to
    assert list(save.glob('**/*.jsonl')) == [save/'metrics.jsonl']
    ck = save/'latest_checkpoint'
    assert {'random_states_0.pkl', 'random_states_1.pkl'} <= {p.name for p in ck.iterdir()}
    man = json.loads((ck/'manifest.json').read_text())
    assert man['world_size'] == 2 and man['step'] == 4 and man['seen'] == 4 * 2 * 8
    # the ranks' random states differ (per-rank seeding) and the two ranks drew different items
    s0, s1 = (torch.load(ck/f'random_states_{i}.pkl', weights_only=False)['torch_manual_seed'] for i in (0, 1))
    assert not torch.equal(s0, s1)
    # resume in one process: the step count continues
    r = run_cli(['td_train', *base, '--ckpt', str(ck), '-o', 'training.epochs=2'])
    assert r.returncode == 0, r.stderr
    assert json.loads((save/'latest_checkpoint'/'train_state.json').read_text()) == {'epoch': 2, 'step': 8, 'seen': 64 + 32}
    # and in two again
    r = _torchrun([*base, '--ckpt', str(save/'latest_checkpoint'), '-o', 'training.epochs=3'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((save/'latest_checkpoint'/'train_state.json').read_text())['step'] == 12
