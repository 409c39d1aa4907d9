"The notebook API is the CLI's loop: same weights for the same config and seed; an interrupted fit goes on."
import json
import pytest
import torch
from safetensors.torch import load_file
from conftest import run_cli, TOY_CFG
from terrain_diffusion.training.train import TrainingRun
from terrain_diffusion.training.callbacks import Callback

def test_notebook_run_equals_td_train(tmp_path):
    over = {'training.epochs': 2, 'training.epoch_steps': 6, 'training.seed': 7}
    r = run_cli(['td_train', '-c', str(TOY_CFG), '-o', f'logging.save_dir={tmp_path/"cli"}',
                 *[a for k, v in over.items() for a in ('-o', f'{k}={v}')]])
    assert r.returncode == 0, r.stderr
    run = TrainingRun(TOY_CFG, {**over, 'logging.save_dir': str(tmp_path/'nb')}, progress='off')
    run.fit()
    cli = load_file(str(tmp_path/'cli'/'latest_checkpoint'/'model.safetensors'))
    nb = run.trainer.model.state_dict()
    assert cli.keys() == nb.keys()
    for k in cli: assert torch.equal(cli[k], nb[k]), k

class StopAt(Callback):
    "Raises KeyboardInterrupt, as the kernel's interrupt would, once the run reaches `step`."
    def __init__(self, step): self.step = step
    def on_log(self, run, logs):
        if run.state['step'] >= self.step: self.step = 10**9; raise KeyboardInterrupt

def test_interrupted_fit_continues_and_resumes_under_td_train(tmp_path):
    over = {'training.epochs': 2, 'training.epoch_steps': 8, 'training.log_every_steps': 2, 'logging.save_dir': str(tmp_path/'nb')}
    run = TrainingRun(TOY_CFG, over, callbacks=[StopAt(4)], progress='off')
    with pytest.raises(KeyboardInterrupt): run.fit()
    assert run.state == {'epoch': 0, 'step': 4, 'seen': 32}
    run.fit()                                            # carries on from step 4 to the end
    assert run.state['step'] == 16
    straight = TrainingRun(TOY_CFG, {**over, 'logging.save_dir': str(tmp_path/'straight')}, progress='off'); straight.fit()
    for a, b in zip(run.trainer.model.parameters(), straight.trainer.model.parameters()): assert torch.equal(a, b)
    # a checkpoint written after the interruption resumes under td_train
    run2 = TrainingRun(TOY_CFG, {**over, 'logging.save_dir': str(tmp_path/'nb2')}, callbacks=[StopAt(6)], progress='off')
    with pytest.raises(KeyboardInterrupt): run2.fit()
    path = run2.save_checkpoint()
    r = run_cli(['td_train', '-c', str(TOY_CFG), '--ckpt', str(path), *[a for k, v in over.items() if k != 'logging.save_dir'
                 for a in ('-o', f'{k}={v}')], '-o', f'logging.save_dir={tmp_path/"nb2"}'])
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/'nb2'/'latest_checkpoint'/'train_state.json').read_text())['step'] == 16
    final = load_file(str(tmp_path/'nb2'/'latest_checkpoint'/'model.safetensors'))
    for k, v in straight.trainer.model.state_dict().items(): assert torch.equal(final[k], v), k
