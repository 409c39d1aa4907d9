"The diffusion trainer, td_export and td_sample as a user runs them: real subprocesses, tiny stores, real files."
import json, shutil
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from conftest import run_cli, ROOT

QS = ROOT/'configs'/'quickstart'

def _ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    for n in needles: assert n in lines[0], lines[0]

@pytest.fixture(scope='module')
def stores(tmp_path_factory):
    "A tiny elevation store and a tiny store with latents of an untrained tiny autoencoder."
    d = tmp_path_factory.mktemp('stores')
    _ok(run_cli(['td_data', 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '96', '--tile-size', '32',
                 '--stride', '16', '--val-fraction', '0.3', '--out', str(d/'elev.h5'), '--no-progress']))
    _ok(run_cli(['td_data', 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '160', '--tile-size', '64',
                 '--stride', '32', '--val-fraction', '0.3', '--out', str(d/'lat.h5'), '--no-progress']))
    from terrain_diffusion.models.autoencoder import EDMAutoencoder
    from terrain_diffusion.data.store import encode_store
    torch.manual_seed(0)
    ae = EDMAutoencoder(image_size=64, model_channels=4, model_channel_mults=[1, 1, 1, 1], layers_per_block=1).eval()
    encode_store(d/'lat.h5', ae, progress=False)
    return {'terrain': d/'elev.h5', 'diffusion_base': d/'lat.h5', 'diffusion_decoder': d/'lat.h5'}

def _train(cfg, store, save_dir, *extra, epochs=1):
    return run_cli(['td_train', '-c', str(QS/f'{cfg}.cfg'), '-o', f'logging.save_dir={save_dir}', '-o', f'train_dataset.path={store}',
                    '-o', f'val_dataset.path={store}', '-o', 'training.epoch_steps=2', '-o', f'training.epochs={epochs}',
                    '-o', 'evaluation.validate_epochs=1', '-o', 'ema.checkpoint_every_num_steps=1', '-o', 'evaluation.n_samples=4',
                    '-o', 'evaluation.sample_steps=4', '--progress', 'lines', *extra])

@pytest.fixture(scope='module')
def runs(stores, tmp_path_factory):
    "Each quickstart config trained for two steps (one epoch) on its tiny store."
    d = tmp_path_factory.mktemp('runs')
    for cfg in stores: _ok(_train(cfg, stores[cfg], d/cfg))
    return {cfg: d/cfg for cfg in stores}

def _copy(run, dest):
    shutil.copytree(run, dest, symlinks=True)
    return dest

def _batch(cfg):
    from confection import Config
    return Config().from_disk(QS/f'{cfg}.cfg', interpolate=False)['training']['batch_size']

@pytest.mark.parametrize('cfg', ['terrain', 'diffusion_base', 'diffusion_decoder'])
def test_quickstart_trains_evaluates_checkpoints_resumes(cfg, stores, runs, tmp_path):
    run = _copy(runs[cfg], tmp_path/'run')
    ckpt = run/'latest_checkpoint'
    assert json.loads((ckpt/'train_state.json').read_text())['step'] == 2
    info = json.loads((ckpt/'model_config'/'export.json').read_text())
    assert info['kind'] == 'diffusion'
    assert info['cond_img_channels'] == {'diffusion_decoder': 4, 'diffusion_base': 2}.get(cfg, 0)   # base: the coarse map
    assert ('conditioning' in info) == (cfg == 'diffusion_base')
    if cfg == 'diffusion_base': assert info['conditioning']['factor'] == 4 and info['conditioning']['std'] > 0
    recs = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines()]
    val = [r for r in recs if r['kind'] == 'val'][-1]
    assert np.isfinite(val['val/loss']) and np.isfinite(val['val/mse'])
    if cfg != 'diffusion_base': assert 'val/w1_slope' in val          # samples compared with validation tiles in metres
    assert sorted(p.name for p in (run/'phema').iterdir())[:2] == ['0.000000001.safetensors', '0.000000002.safetensors']
    _ok(_train(cfg, stores[cfg], run, '--ckpt', str(ckpt), epochs=2))
    assert json.loads((ckpt/'train_state.json').read_text()) == {'epoch': 2, 'step': 4, 'seen': 4 * _batch(cfg)}

def test_channel_mismatch_is_one_line(stores, tmp_path):
    r = _train('terrain', stores['terrain'], tmp_path/'run', '-o', 'model.in_channels=3')
    _one_line_error(r, 'in_channels=3', 'image with 1 and cond_img with 0 channels')
    assert not (tmp_path/'run'/'latest_checkpoint').exists()

def test_export_twice_identical_and_loadable(runs, tmp_path):
    ckpt = runs['terrain']/'latest_checkpoint'
    for name in ('a', 'b'): _ok(run_cli(['td_export', '-c', str(ckpt), '-s', '0.08', '-o', str(tmp_path/name)]))
    wa, wb = load_file(str(tmp_path/'a'/'model.safetensors')), load_file(str(tmp_path/'b'/'model.safetensors'))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    live = load_file(str(ckpt/'model.safetensors'))
    assert any(not torch.equal(wa[k], live[k]) for k in wa)             # an EMA, not the live weights
    info = json.loads((tmp_path/'a'/'export.json').read_text())
    assert (info['kind'], info['sigma_rel'], info['step']) == ('diffusion', 0.08, 2)
    assert abs(sum(s['weight'] for s in info['ema_sources']) - 1) < 1e-9
    from terrain_diffusion.models.mp_layers import load_model
    assert type(load_model(tmp_path/'a')).__name__ == 'EDMUnet2D'      # usable as a teacher (model.main_path)

def test_sample_seeded(runs, tmp_path):
    from terrain_diffusion.eval.export import export_model
    export_model(runs['terrain']/'latest_checkpoint', 0.05, tmp_path/'m')
    for name, seed in (('a', 1), ('b', 1), ('c', 2)):
        r = _ok(run_cli(['td_sample', str(tmp_path/'m'), '-n', '3', '--seed', str(seed), '--steps', '4', '-o', str(tmp_path/name)]))
        assert 'metres' in r.stdout
    a, b, c = (np.load(tmp_path/n/'samples.npy') for n in 'abc')
    assert a.shape == (3, 32, 32) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert (tmp_path/'a'/'samples.png').stat().st_size > 1000

def _cli_error(main, argv, capsys, *needles):
    "In-process run of a console entry point: exit status 2 and one stderr line holding `needles`."
    with pytest.raises(SystemExit) as e: main(argv)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert e.value.code == 2 and len(lines) == 1, err
    for n in needles: assert n in lines[0], lines[0]

def test_export_bad_input(runs, tmp_path, capsys, monkeypatch):
    from terrain_diffusion.eval.export import export_main
    monkeypatch.delenv('TD_DEBUG', raising=False)
    ckpt, out = runs['terrain']/'latest_checkpoint', tmp_path/'out'
    _one_line_error(run_cli(['td_export', '-c', str(tmp_path), '-s', '0.05', '-o', str(out)]), 'is not a checkpoint')
    _cli_error(export_main, ['-c', str(ckpt), '-s', '0.5', '-o', str(out)], capsys, '-s/--sigma-rel 0.5', 'expected a number in (0,')
    _cli_error(export_main, ['-c', str(ckpt), '-s', '0', '-o', str(out)], capsys, '-s/--sigma-rel 0.0')
    _cli_error(export_main, ['-c', str(ckpt), '-s', '0.05', '-e', '9', '-o', str(out)], capsys, '-e/--step 9')
    _cli_error(export_main, ['-c', str(ckpt), '-s', 'x', '-o', str(out)], capsys, 'td_export:', 'sigma-rel')
    _cli_error(export_main, ['-c', str(ckpt), '-s', '0.05', '-o', str(ckpt)], capsys, 'exists and is not an empty folder')
    run2 = _copy(runs['terrain'], tmp_path/'run2')                      # a run whose snapshot files are gone
    shutil.rmtree(run2/'phema')
    _cli_error(export_main, ['-c', str(run2/'latest_checkpoint'), '-s', '0.05', '-e', '1', '-o', str(out)], capsys,
               'no EMA snapshots', 'up to step 1')
    assert not out.exists()

def test_sample_bad_input(runs, tmp_path, capsys, monkeypatch):
    from terrain_diffusion.eval.export import export_model, sample_main
    monkeypatch.delenv('TD_DEBUG', raising=False)
    _one_line_error(run_cli(['td_sample', str(tmp_path/'none'), '-o', str(tmp_path/'o')]), 'is not a folder')
    _cli_error(sample_main, [str(tmp_path), '-o', str(tmp_path/'o')], capsys, 'has no export.json')
    export_model(runs['diffusion_decoder']/'latest_checkpoint', 0.05, tmp_path/'m')
    _cli_error(sample_main, [str(tmp_path/'m'), '-o', str(tmp_path/'o')], capsys, 'needs conditioning', 'cond_img channels 4')
    export_model(runs['terrain']/'latest_checkpoint', 0.05, tmp_path/'t')
    _cli_error(sample_main, [str(tmp_path/'t'), '-n', '0', '-o', str(tmp_path/'o')], capsys, '-n 0')
    _cli_error(sample_main, [str(tmp_path/'t'), '--solver', 'euler', '-o', str(tmp_path/'o')], capsys, "--solver 'euler'")
    assert not (tmp_path/'o').exists()

FULL = ['diffusion_base/diffusion_192-3.cfg', 'diffusion_base/diffusion_128-3.cfg', 'diffusion_decoder/diffusion_decoder_64-3.cfg']

@pytest.mark.parametrize('path', FULL)
def test_full_size_configs_validate(path):
    from terrain_diffusion.config import load_config, validate_config
    from terrain_diffusion.trainers.diffusion import diffusion_settings
    cfg = validate_config(load_config(ROOT/'configs'/path))
    m = cfg['model']
    assert cfg['trainer_class']['@trainer'] == 'diffusion' and m['@model'] == 'unet'
    assert (m['in_channels'], m['out_channels']) == ((7, 5) if 'base' in path else (5, 1))   # base: + the 2-channel coarse map
    assert diffusion_settings(cfg)['P_mean'] == (-0.6 if 'base' in path else 0.0)
    assert cfg['ema']['checkpoint_every_num_steps'] == 5120 and list(cfg['ema']['sigma_rels']) == [0.05, 0.1]
