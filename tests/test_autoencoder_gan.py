"""Process-level tests of the autoencoder and GAN trainers: the quickstart configs train through `td_train`,
evaluate, checkpoint and resume bit for bit; bad settings fail with one line and exit status 2.

The store is built with `td_data build` in a temporary folder (synthetic terrain, 128 px tiles: 16 px coarse maps)."""
import json
import math
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from conftest import run_cli, ROOT

CFG = {'autoencoder': ROOT/'configs'/'quickstart'/'autoencoder.yaml', 'gan': ROOT/'configs'/'quickstart'/'gan.cfg'}
VAL_KEY = {'autoencoder': 'val/mae_m', 'gan': 'val/w1_slope'}

def td_train(*args):
    "`td_train ARGS` as a subprocess."
    return run_cli(['td_train', *map(str, args)])

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp('data')/'quickstart.h5'
    r = run_cli(['td_data', 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '256', '--tile-size', '128',
                 '--out', str(out), '--no-progress'])
    assert r.returncode == 0, r.stderr
    return out

def train_args(kind, store, save_dir, *extra, epochs=1):
    return ['-c', CFG[kind], '-o', f'train_dataset.path={store}', '-o', f'val_dataset.path={store}',
            '-o', f'logging.save_dir={save_dir}', '-o', 'training.epoch_steps=2', '-o', f'training.epochs={epochs}',
            '-o', 'training.log_every_steps=1', '-o', 'ema.checkpoint_every_num_steps=2', '--progress', 'lines', *extra]

def ckpt_tensors(ckpt: Path) -> dict:
    "Every model, optimizer state and EMA tensor a resume restores, as flat name -> tensor."
    ckpt, out = ckpt.resolve(), {}
    for f in sorted(ckpt.glob('model*.safetensors')):
        out.update({f'{f.stem}.{k}': v for k, v in load_file(str(f)).items()})
    for f in sorted(ckpt.glob('optimizer*.bin')):
        opt = torch.load(f, weights_only=True)
        for i, st in opt['state'].items():
            for k, v in st.items(): out[f'{f.stem}.{i}.{k}'] = torch.as_tensor(v)
    def walk(x, prefix):
        if isinstance(x, torch.Tensor): out[prefix] = x
        elif isinstance(x, dict): [walk(v, f'{prefix}.{k}') for k, v in x.items()]
        elif isinstance(x, (list, tuple)): [walk(v, f'{prefix}.{i}') for i, v in enumerate(x)]
    walk(torch.load(ckpt/'phema.pt', weights_only=True), 'ema')
    return out

@pytest.mark.parametrize('kind', ['autoencoder', 'gan'])
def test_quickstart_trains_evaluates_checkpoints_and_resumes_exactly(kind, store, tmp_path):
    straight, resumed = tmp_path/'straight', tmp_path/'resumed'
    r = td_train(*train_args(kind, store, straight, epochs=2)); assert r.returncode == 0, r.stderr
    r = td_train(*train_args(kind, store, resumed, epochs=1)); assert r.returncode == 0, r.stderr
    ck = resumed/'latest_checkpoint'
    assert (ck/'model.safetensors').is_file() and (ck/'phema.pt').is_file() and (ck/'model_config'/'config.json').is_file()
    saved = json.loads((ck/'model_config'/'config.json').read_text())
    assert saved['_registry_name'] == ('autoencoder' if kind == 'autoencoder' else 'generator')
    val = [json.loads(l) for l in (resumed/'metrics.jsonl').read_text().splitlines() if json.loads(l)['kind'] == 'val']
    assert len(val) == 1 and math.isfinite(val[0][VAL_KEY[kind]]), val
    r = td_train(*train_args(kind, store, resumed, '--ckpt', ck, epochs=2)); assert r.returncode == 0, r.stderr
    assert json.loads((ck/'train_state.json').read_text())['step'] == 4
    a, b = ckpt_tensors(straight/'latest_checkpoint'), ckpt_tensors(ck)
    n_models = 2 if kind == 'gan' else 1
    assert len({k.split('.')[0] for k in a if k.startswith('model')}) == n_models
    assert any(k.startswith('optimizer') for k in a) and any(k.startswith('ema.') for k in a)
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k
    snaps = lambda d: {p.name: load_file(str(p)) for p in sorted((d/'phema').glob('*.safetensors'))}
    sa, sb = snaps(straight), snaps(resumed)
    assert sa.keys() == sb.keys() and len(sa) > 0
    for n in sa:
        for k in sa[n]: assert torch.equal(sa[n][k], sb[n][k]), (n, k)

BAD = [('autoencoder', 'autoencoder.kl_weight=-0.5', 'autoencoder.kl_weight'),
       ('autoencoder', 'train_dataset.crop_size=256', 'crop_size 256'),
       ('autoencoder', 'train_dataset.crop_size=60', 'train_dataset.crop_size = 60'),
       ('gan', 'gan.r_gamma=-1', 'gan.r_gamma'),
       ('gan', 'gan.crop_size=32', 'gan.crop_size = 32 is larger than the coarse maps'),
       ('gan', 'gan.latent_size=3', 'gan.latent_size = 3 is too small'),
       ('gan', 'gan.latent_size=7', 'gan.latent_size = 7 gives generated maps of 2 px'),
       ('gan', 'training.gradient_accumulation_steps=2', 'gradient_accumulation_steps = 1')]

@pytest.mark.parametrize('kind,override,expected', BAD)
def test_bad_settings_fail_in_one_line(kind, override, expected, store, tmp_path):
    r = td_train(*train_args(kind, store, tmp_path/'run', '-o', override))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert lines[0].startswith('td_train: error: ') and expected in lines[0], lines[0]
    assert not (tmp_path/'run'/'latest_checkpoint').exists()
