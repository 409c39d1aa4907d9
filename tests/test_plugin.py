"""A trainer from another package, found through entry points, trains with td_train and resumes.

The plugin is a real throwaway package built and installed (pip --target) into a temporary folder that is put on
PYTHONPATH: its entry points are seen only by the subprocess that has that folder on its path."""
import json
import subprocess
import sys
from conftest import run_cli

PLUGIN = '''
import torch
from torch.utils.data import Dataset
from terrain_diffusion.training.trainer import Trainer

class Ramp(Dataset):
    def __len__(self): return 10
    def __getitem__(self, i): return {"image": torch.full((1, 4, 4), float(i)) + torch.randn(1, 4, 4)}

def make_ramp(): return Ramp()

class PluginTrainer(Trainer):
    "Implements only the seven abstract methods."
    def __init__(self, config, resolved, accelerator, state):
        super().__init__(config, resolved, accelerator, state)
        self.model = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)
    def train_step(self, state, batch):
        loss = (self.model(batch["image"]) - batch["image"]).pow(2).mean()
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients:
            self.opt.step(); self.opt.zero_grad()
            state["step"] += 1; state["seen"] += batch["image"].shape[0]
        return {"loss": loss.item()}
    def evaluate(self): return {"val/zero": 0.0}
    def get_accelerate_modules(self): return (self.model, self.opt)
    def set_prepared_modules(self, prepared_modules): self.model, self.opt = prepared_modules
    def get_checkpoint_modules(self): return []
    def load_model_checkpoint(self, model_ckpt_path): pass
    def get_model_for_saving(self): return self.model
'''

SETUP = '''
from setuptools import setup
setup(name="td-plugin-example", version="0.0.1", py_modules=["td_plugin_example"],
      entry_points={"terrain_diffusion_trainers": ["plugin_trainer = td_plugin_example:PluginTrainer"],
                    "terrain_diffusion_datasets": ["plugin_ramp = td_plugin_example:make_ramp"]})
'''

CFG = '''
[trainer_class]
@trainer = "plugin_trainer"

[training]
batch_size = 2
epochs = 2
epoch_steps = 3

[logging]
save_dir = "{save_dir}"
temp_save_epochs = 1

[evaluation]
validate_epochs = 1

[train_dataset]
@dataset = "plugin_ramp"
'''

def test_entry_point_trainer(tmp_path):
    src = tmp_path/'src'; src.mkdir()
    (src/'td_plugin_example.py').write_text(PLUGIN); (src/'setup.py').write_text(SETUP)
    site = tmp_path/'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--no-index',
                        '--target', str(site), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = tmp_path/'plugin.cfg'; cfg.write_text(CFG.format(save_dir=tmp_path/'run'))
    env = {'PYTHONPATH': str(site)}
    r = run_cli(['td_train', '-c', str(cfg), '-o', 'training.epochs=1'], env=env)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path/'run'/'latest_checkpoint'
    assert {'model.safetensors', 'optimizer.bin', 'manifest.json', 'config.json', 'model_config', 'train_state.json',
            'wandb_run.json', 'random_states_0.pkl'} <= {p.name for p in ckpt.iterdir()}
    r = run_cli(['td_train', '-c', str(cfg), '--ckpt', str(ckpt)], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((ckpt/'train_state.json').read_text()) == {'epoch': 2, 'step': 6, 'seen': 12}
    # without the plugin on the path, the name is unknown: one line, exit 2
    r = run_cli(['td_train', '-c', str(cfg)])
    assert r.returncode == 2 and "'@trainer = plugin_trainer' is not registered" in r.stderr
