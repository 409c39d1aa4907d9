"""A base model conditioned on a coarse map: it follows the map, it also samples with the null condition (conditioning
dropout), its export.json carries the conditioning spec, and a run with `evaluation.decoder_model` draws decoded terrain."""
import json
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, ROOT

QS_BASE = ROOT/'configs'/'quickstart'/'diffusion_base.cfg'

class PoolEncoder(torch.nn.Module):
    "A stand-in encoder (the store only needs latents): a 1x1 conv of the 8x8-pooled residual, fixed log-variance."
    def __init__(self, C=4):
        super().__init__(); torch.manual_seed(0); self.conv = torch.nn.Conv2d(1, C, 1)
    def preencode(self, x, cond=None):
        m = self.conv(F.avg_pool2d(x, 8)); return m, torch.full_like(m, -2.0)

@pytest.fixture(scope='module')
def store(tmp_path_factory):
    "32 training and 16 validation tiles of 128 px from 4 synthetic maps, with latents: a 16x16 latent grid, 4x4 coarse."
    from terrain_diffusion.data.store import build_store, synthetic_dems, encode_store
    d = tmp_path_factory.mktemp('cond')
    s = build_store(d/'s.h5', synthetic_dems(4, 320, seed=0), tile_size=128, stride=64, val_fraction=0.2, progress=False)
    encode_store(s, PoolEncoder(), progress=False)
    return s

def _overrides(store, save_dir, steps, channels=8):
    return {'logging.save_dir': str(save_dir), 'train_dataset.path': str(store), 'val_dataset.path': str(store),
            'model.image_size': 16, 'model.model_channels': channels, 'training.batch_size': 16, 'training.epochs': 1,
            'training.epoch_steps': steps, 'evaluation.validate_epochs': 0, 'logging.samples_every_epochs': 0,
            'logging.temp_save_epochs': 0, 'ema.checkpoint_every_num_steps': 0, 'lr_sched.ref_nimg': 100000}

def test_conditioned_base_follows_its_coarse_map_and_samples_without_one(store, tmp_path):
    from terrain_diffusion.training.train import TrainingRun
    from terrain_diffusion.data.conditioning import null_cond_image, coarse_correlation
    from terrain_diffusion.models.sampling import sample_diffusion
    from terrain_diffusion.trainers.diffusion import CondNet
    run = TrainingRun(QS_BASE, _overrides(store, tmp_path/'run', 160), progress='off', resume='fresh')
    run.fit()
    tr, ds = run.trainer, run.trainer.val_data
    items = [ds[i] for i in range(len(ds))]
    x0, ci = torch.stack([it['image'] for it in items]), torch.stack([it['cond_img'] for it in items])
    lowfreq = lambda x: x[:, -1] / 0.5 * ds.stats['lowfreq_std'] + ds.stats['lowfreq_mean']   # signed-sqrt elevation
    target = F.avg_pool2d(lowfreq(x0)[:, None], 4)[:, 0]                                      # the coarse maps given
    with tr.ema_weights() as model:
        draw = lambda cond: sample_diffusion(CondNet(model), x0.shape, 16, cond_img=cond, generator=torch.Generator().manual_seed(0))
        xc, xu = draw(ci), draw(null_cond_image(len(items), 16, 16))
    r_cond, r_uncond = coarse_correlation(lowfreq(xc), target, 4), coarse_correlation(lowfreq(xu), target, 4)
    print(f'\ncorrelation with the coarse map: conditioned {r_cond:.3f}, null condition {r_uncond:.3f}')
    assert r_cond >= 0.9 and abs(r_uncond) < 0.5, (r_cond, r_uncond)
    # the null condition gives terrain, not a collapse: its coarse values spread like the data's
    u = F.avg_pool2d(lowfreq(xu)[:, None], 4)
    assert torch.isfinite(xu).all() and 0.3 < float(u.std() / target.std()) < 3
    info = tr.export_info()
    assert info['cond_img_channels'] == 2 and info['conditioning'] == ds.cond_spec and info['conditioning']['factor'] == 4
    run.close()

def _hand_made_decoder(path, store):
    "A tiny untrained decoder U-Net (4 latent + 1 -> 1) with the export.json facts td_export would write."
    from terrain_diffusion.models.unet import EDMUnet2D
    from terrain_diffusion.data.store import store_stats
    torch.manual_seed(0)
    EDMUnet2D(in_channels=5, out_channels=1, image_size=128, model_channels=4, model_channel_mults=(1,), midblock_attention=False,
              layers_per_block=1, channels_per_head=4).save_pretrained(path)
    (Path(path)/'export.json').write_text(json.dumps({'kind': 'consistency', 'sigma_data': 0.5, 'image_shape': [1, 128, 128],
                                                      'cond_img_channels': 4, 't_mid': 1.1, 'stats': store_stats(store)}))
    return path

def test_base_run_with_a_decoder_draws_decoded_terrain(store, tmp_path):
    from terrain_diffusion.training.train import TrainingRun
    dec = _hand_made_decoder(tmp_path/'decoder', store)
    run = TrainingRun(QS_BASE, {**_overrides(store, tmp_path/'run', 2), 'evaluation.decoder_model': str(dec)}, progress='off',
                      resume='fresh')
    run.fit()
    x = run.trainer.sample(2, seed=0)
    assert x.shape == (2, 1, 128, 128) and torch.isfinite(x).all()          # full resolution, not the 16x16 latent grid
    st = run.trainer.val_data.stats
    assert abs(float(x.mean()) - st['elevation_mean']) < 5 * st['elevation_std']       # metres
    assert run.trainer.sample_pixel_size == run.trainer.pixel_size            # hillshade at the full-resolution spacing
    run.close()
    # the same through td_train: the sample PNGs are written; a folder that is not a decoder is one line, exit 2
    args = ['td_train', '-c', str(QS_BASE), *[a for k, v in _overrides(store, tmp_path/'cli', 2).items() for a in ('-o', f'{k}={v}')],
            '-o', 'logging.samples_every_epochs=1', '--progress', 'off']
    r = run_cli([*args, '-o', f'evaluation.decoder_model={dec}'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((tmp_path/'cli'/'samples').glob('step_*.png'))
    r = run_cli([*args, '-o', f'evaluation.decoder_model={tmp_path}', '-o', f'logging.save_dir={tmp_path/"bad"}'])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and 'evaluation.decoder_model' in lines[0] and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'bad').exists()

def test_consistency_student_of_a_conditioned_teacher_exports_its_spec_and_decodes(store, tmp_path):
    from terrain_diffusion.training.train import TrainingRun
    from terrain_diffusion.models.unet import EDMUnet2D
    torch.manual_seed(0)
    teacher = EDMUnet2D(in_channels=7, out_channels=5, image_size=16, model_channels=8, model_channel_mults=(1, 2),
                        layers_per_block=1, channels_per_head=8)
    with torch.no_grad(): teacher.out_gain.fill_(1.0)
    teacher.save_pretrained(tmp_path/'teacher')
    dec = _hand_made_decoder(tmp_path/'decoder', store)
    run = TrainingRun(ROOT/'configs'/'quickstart'/'consistency_base.cfg',
                      {'logging.save_dir': str(tmp_path/'run'), 'train_dataset.path': str(store), 'val_dataset.path': str(store),
                       'model.main_path': str(tmp_path/'teacher'), 'training.epochs': 1, 'training.epoch_steps': 2,
                       'evaluation.validate_epochs': 0, 'logging.temp_save_epochs': 0, 'evaluation.decoder_model': str(dec)},
                      progress='off', resume='fresh')
    run.fit()
    tr = run.trainer
    assert tr.export_info()['conditioning'] == tr.val_data.cond_spec and tr.export_info()['cond_img_channels'] == 2
    x = tr.sample(2, seed=0)
    assert x.shape == (2, 1, 128, 128) and torch.isfinite(x).all()
    run.close()
