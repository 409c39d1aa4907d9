"A real W&B run in offline mode: opened once, its id stored in each checkpoint, continued on resume."
import json
from conftest import run_cli

def test_offline_wandb_run_is_resumed(tmp_path, toy_args):
    save = tmp_path/'run'
    r = run_cli(toy_args('-o', 'wandb.mode="offline"', epochs=1, steps=3))
    assert r.returncode == 0, r.stderr
    run_id = json.loads((save/'latest_checkpoint'/'wandb_run.json').read_text())['id']
    assert run_id
    runs = list((save/'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and runs[0].name.endswith(run_id)
    r = run_cli(toy_args('-o', 'wandb.mode="offline"', '--ckpt', str(save/'latest_checkpoint'), epochs=2, steps=3))
    assert r.returncode == 0, r.stderr
    assert json.loads((save/'latest_checkpoint'/'wandb_run.json').read_text())['id'] == run_id
    assert all(p.name.endswith(run_id) for p in (save/'wandb').glob('offline-run-*'))
