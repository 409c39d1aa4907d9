"td_generate as a user runs it: random access, the conditioned stack, outputs, and one-line refusals of bad input."
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import run_cli

STATS = {'elevation_mean': 500.0, 'elevation_std': 150.0, 'residual_mean': 0.0, 'residual_std': 1.8,
         'lowfreq_mean': 22.0, 'lowfreq_std': 2.3, 'latent_mean': [0.1, -0.2, 0.0, 0.3], 'latent_std': [1.0, 0.8, 1.2, 0.9]}

def tiny_model(path, kind='diffusion', in_ch=1, out_ch=1, size=32, seed=0, **info):
    "A tiny untrained EDMUnet2D saved as td_export would: config.json, model.safetensors, export.json."
    from terrain_diffusion.models.unet import EDMUnet2D
    torch.manual_seed(seed)
    net = EDMUnet2D(in_channels=in_ch, out_channels=out_ch, image_size=size, model_channels=8,
                    model_channel_mults=(1, 2), layers_per_block=1, channels_per_head=8, midblock_attention=False)
    with torch.no_grad(): net.out_gain.fill_(1.0)
    net.save_pretrained(path)
    (Path(path)/'export.json').write_text(json.dumps({
        'format': 'terrain_diffusion.export/1', 'kind': kind, 'sigma_data': 0.5, 'image_shape': [out_ch, size, size],
        'cond_img_channels': in_ch - out_ch, 'conditional_inputs': [], 'pixel_size_m': [90.0, 75.0], 'stats': STATS,
        'metres': {'channel': 0, 'scale': 300.0, 'offset': 500.0, 'signed_square': False, 'grid': 'image'}, **info}))
    return Path(path)

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp('models')
    spec = {'factor': 4, 'mean': 22.0, 'std': 2.3}
    rng = np.random.default_rng(0)
    np.save(d/'coarse.npy', (rng.uniform(200, 900, (12, 12))).astype(np.float32))   # 12 coarse px x 4 x 8 = 384 output px
    return {'elev': tiny_model(d/'elev'), 'elev_cm': tiny_model(d/'elev_cm', 'consistency', seed=1),
            'base': tiny_model(d/'base', 'consistency', 7, 5, 8, seed=2, conditioning=spec),
            'dec': tiny_model(d/'dec', 'consistency', 5, 1, 32, seed=3),
            'dec3': tiny_model(d/'dec3', 'consistency', 4, 1, 32, seed=4),
            'coarse': d/'coarse.npy', 'dir': d}

def gen(args, out, cwd=None):
    r = run_cli(['td_generate', *map(str, args), '-o', str(out)], cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr
    return np.load(Path(out)/'elevation.npy')

@pytest.mark.parametrize('name,steps', [('elev', 4), ('elev_cm', 2)])
def test_random_access_single_model(models, tmp_path, name, steps):
    "A 128x128 region at column 96, row 160 alone equals the same pixels of a 384x384 generation (same seed)."
    m = ['--model', models[name], '--seed', 7, '--steps', steps, '--batch-size', 64]
    big = gen([*m, '--region', 0, 0, 384, 384], tmp_path/'big')
    small = gen([*m, '--region', 96, 160, 128, 128], tmp_path/'small')
    assert big.shape == (384, 384) and small.shape == (128, 128) and big.dtype == np.float32
    assert np.abs(small - big[160:288, 96:224]).max() <= 1e-3
    assert big.std() > 1.0                                             # a terrain, not a constant
    other = gen([*m[:3], 8, *m[4:], '--region', 96, 160, 128, 128], tmp_path/'seed8')
    assert np.abs(other - small).mean() > 1.0                          # the seed matters
    far = gen([*m, '--region', -100000, 5000000, 40, 24], tmp_path/'far')
    assert far.shape == (24, 40) and np.isfinite(far).all()

def test_random_access_conditioned_stack(models, tmp_path):
    "The coarse map -> conditioned base -> decoder stack: the same region alone and inside a larger one."
    m = ['--base', models['base'], '--decoder', models['dec'], '--coarse', models['coarse'], '--seed', 3, '--guidance', 1.5,
         '--batch-size', 64]
    big = gen([*m, '--region', 0, 0, 384, 384], tmp_path/'big')
    small = gen([*m, '--region', 96, 160, 128, 128], tmp_path/'small')
    assert np.abs(small - big[160:288, 96:224]).max() <= 1e-3
    odd = gen([*m, '--region', 101, 163, 37, 29], tmp_path/'odd')       # not aligned to the latent grid
    assert np.abs(odd - big[163:192, 101:138]).max() <= 1e-3
    facts = json.loads((tmp_path/'big'/'generate.json').read_text())
    assert facts['conditioned'] and facts['region'] == [0, 0, 384, 384]

def test_random_access_with_the_coarse_map_gan(models, tmp_path):
    "The GAN's coarse map of the plane, generated per request from (seed, tile) noise, keeps random access exact."
    from terrain_diffusion.models.gan import MPGenerator
    torch.manual_seed(0)
    MPGenerator(latent_channels=4, out_channels=1, model_channels=8, model_channel_mults=(1, 1), layers_per_block=1).save_pretrained(tmp_path/'gan')
    m = ['--base', models['base'], '--decoder', models['dec'], '--coarse-model', tmp_path/'gan', '--seed', 5, '--batch-size', 64]
    big = gen([*m, '--region', -64, 0, 192, 160], tmp_path/'big')
    small = gen([*m, '--region', -24, 72, 64, 64], tmp_path/'small')
    assert np.abs(small - big[72:136, 40:104]).max() <= 1e-3 and big.std() > 1.0

def test_outputs_geotiff_png_and_overwrite(models, tmp_path):
    from terrain_diffusion.data.dem_io import read_dem
    e = gen(['--model', models['elev_cm'], '--region', -5, 3, 70, 50], tmp_path/'g')
    assert sorted(p.name for p in (tmp_path/'g').iterdir()) == ['elevation.npy', 'elevation.tif', 'generate.json', 'hillshade.png']
    dem = read_dem(tmp_path/'g'/'elevation.tif')
    assert np.array_equal(dem.elevation, e) and np.allclose(dem.spacing_m, (90.0, 75.0))
    png = (tmp_path/'g'/'hillshade.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    e2 = gen(['--model', models['elev_cm'], '--region', 0, 0, 30, 20], tmp_path/'g')      # its own folder: replaced
    assert e2.shape == (20, 30) and not list(tmp_path.glob('.g.*'))

def _bad(args, tmp_path, expect, capsys=None):
    "td_generate `args` (a real subprocess, or in this process with `capsys`) exits 2 with one line containing `expect`, writing nothing."
    before = sorted(p.name for p in tmp_path.rglob('*'))
    if capsys is None:
        r = run_cli(['td_generate', *map(str, args)])
        code, err = r.returncode, r.stderr
    else:
        from terrain_diffusion.eval.generate import generate_main
        with pytest.raises(SystemExit) as e: generate_main([str(a) for a in args])
        code, err = e.value.code, capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expect in lines[0] and 'Traceback' not in err, err
    assert sorted(p.name for p in tmp_path.rglob('*')) == before          # nothing written, nothing left behind
    return lines[0]

def test_bad_input_one_line_exit_2(models, tmp_path, capsys):
    d = tmp_path
    stack = ['--base', models['base'], '--decoder', models['dec']]
    np.save(d/'rgb.npy', np.zeros((3, 8, 8), np.float32))
    nan = np.full((8, 8), 300.0, np.float32); nan[2, 3] = np.nan; np.save(d/'nan.npy', nan)
    (d/'mine').mkdir(); (d/'mine'/'notes.txt').write_text('keep')
    cases = [(['--model', models['elev'], '--region', 0, 0, 0, 64, '-o', d/'o'], 'width and height must be >= 1'),
             (['--model', models['elev'], '--region', 0, 0, 64, -3, '-o', d/'o'], 'width and height must be >= 1'),
             ([*stack, '--coarse', d/'rgb.npy', '--region', 0, 0, 64, 64, '-o', d/'o'], 'expected a 2-D'),
             ([*stack, '--coarse', d/'nan.npy', '--region', 0, 0, 64, 64, '-o', d/'o'], 'NaN'),
             ([*stack, '--coarse', models['coarse'], '--region', 300, 0, 200, 64, '-o', d/'o'], 'outside the coarse map'),
             (['--base', models['base'], '--decoder', models['dec3'], '--coarse', models['coarse'], '--region', 0, 0, 64, 64, '-o', d/'o'],
              'conditioned on 3 latent channels; the base model'),
             ([*stack, '--region', 0, 0, 64, 64, '-o', d/'o'], 'give --coarse FILE or --coarse-model DIR'),
             (['--model', models['elev'], '--region', 0, 0, 64, 64, '-o', d/'missing'/'o'], 'does not exist'),
             (['--model', models['elev'], '--region', 0, 0, 64, 64, '-o', d/'mine'], 'did not write'),
             (['--model', d/'nowhere', '--region', 0, 0, 64, 64, '-o', d/'o'], 'is not a folder'),
             (['--model', models['elev_cm'], '--steps', 3, '--region', 0, 0, 64, 64, '-o', d/'o'], 'takes 1 or 2 steps'),
             (['--region', 0, 0, 64, 64, '-o', d/'o'], 'give --model DIR'),
             ([*stack, '--coarse', models['coarse'], '--window', 16, '--region', 0, 0, 64, 64, '-o', d/'o'], 'apply to --model only'),
             (['--model', models['elev'], '-o', d/'o'], 'the following arguments are required: --region')]
    _bad(*cases[0][:1], tmp_path, cases[0][1])                                # as a real process
    for args, expect in cases[1:]: _bad(args, tmp_path, expect, capsys)
    assert (d/'mine'/'notes.txt').read_text() == 'keep'

def train_conditioned_base(path, spec, steps=150, seed=0):
    """A tiny base model trained here, in seconds, on data whose low-frequency channel is the conditioning map
    (the latents are noise): the least a conditioned base must learn. Saved as td_export would."""
    from terrain_diffusion.data.conditioning import cond_image
    from terrain_diffusion.models.sampling import predict_x0
    from terrain_diffusion.models.unet import EDMUnet2D
    g = torch.Generator().manual_seed(seed); torch.manual_seed(seed)
    net = EDMUnet2D(in_channels=7, out_channels=5, image_size=8, model_channels=16, model_channel_mults=(1, 2),
                    layers_per_block=1, channels_per_head=16, midblock_attention=False)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(steps):
        coarse = torch.rand(16, 1, 4, 4, generator=g) * 800 + 100               # metres, with the 1-pixel margin
        cond = cond_image(coarse, spec)                                           # (16, 2, 8, 8)
        x0 = torch.cat([0.5 * torch.randn(16, 4, 8, 8, generator=g), 0.5 * cond[:, :1]], 1)
        t = torch.atan(torch.exp(-0.6 + 1.3 * torch.randn(16, generator=g)) / 0.5)
        tb = t.view(-1, 1, 1, 1)
        x_t = torch.cos(tb) * x0 + torch.sin(tb) * 0.5 * torch.randn(x0.shape, generator=g)
        loss = ((predict_x0(net, x_t, t, cond_img=cond) - x0) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    net.save_pretrained(path)
    stats = {**STATS, 'lowfreq_mean': spec['mean'], 'lowfreq_std': spec['std'], 'latent_mean': [0.0] * 4, 'latent_std': [1.0] * 4}
    (Path(path)/'export.json').write_text(json.dumps({'format': 'terrain_diffusion.export/1', 'kind': 'diffusion', 'sigma_data': 0.5,
        'image_shape': [5, 8, 8], 'cond_img_channels': 2, 'conditional_inputs': [], 'conditioning': spec, 'stats': stats,
        'pixel_size_m': [90.0, 75.0], 'metres': None}))
    return Path(path)

def test_sketch_ridge_becomes_terrain_ridge(tmp_path):
    "A grey PNG sketch with a bright band across it -> terrain whose highest rows lie on the band."
    from PIL import Image
    spec = {'factor': 4, 'mean': 22.0, 'std': 5.0}
    base = train_conditioned_base(tmp_path/'base', spec)
    dec = tiny_model(tmp_path/'dec', 'consistency', 5, 1, 32, seed=3, stats={**STATS, 'residual_std': 0.05})
    sketch = np.full((8, 8), 40, np.uint8); sketch[4] = 200                 # ridge along coarse row 4 = output rows 128..159
    Image.fromarray(sketch, mode='L').save(tmp_path/'sketch.png')
    e = gen(['--base', base, '--decoder', dec, '--coarse', tmp_path/'sketch.png', '--metres-per-level', 2.5, '--steps', 8, '--decoder-steps', 1,
             '--region', 0, 0, 256, 256], tmp_path/'out')
    rows = e.mean(1)
    ridge, away = rows[136:152].mean(), np.concatenate([rows[:96], rows[200:]]).mean()
    assert 128 <= int(np.argmax(rows)) < 160, int(np.argmax(rows))
    assert ridge - away > 200, (ridge, away)                                # sketch: 500 m ridge on 100 m ground
    assert np.ptp(e.mean(0)) < 0.3 * (ridge - away)                         # and no ridge across the columns
