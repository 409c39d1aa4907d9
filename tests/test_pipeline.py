"""The whole pipeline end to end, as a user runs it: from an empty folder to a generated terrain PNG.

Every stage is a real subprocess of a console script (`td_data`, `td_train`, `td_export`) with the tiny configs in
configs/pipeline/, run from the working folder (the configs' paths are relative to it); each stage hands the next a
path. The generation step has no console script: it runs the decode cells of nbs/tutorials/full_pipeline.ipynb
(the cells that start with `# full decode`), so the tutorial's code is the code under test.
"""
import json
import time
from pathlib import Path
import numpy as np
from conftest import run_cli, ROOT

CFG = ROOT/'configs'/'pipeline'
NB = ROOT/'nbs'/'tutorials'/'full_pipeline.ipynb'

def _td(args, cwd):
    "Run console script args[0] in `cwd` as a subprocess; fail with its stderr on a non-zero exit."
    r = run_cli([str(a) for a in args], cwd=cwd, timeout=600)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {r.stderr[-3000:]}"
    return r

def _decode_functions() -> dict:
    "The tutorial's decode functions (`base_to_parts`, `recompose`, `draw`, `generate_terrain`), executed from its cells."
    ns = {}
    exec("import torch\nimport torch.nn.functional as F\nfrom terrain_diffusion.models.mp_layers import load_model\n"
         "from terrain_diffusion.eval.export import read_export_info\n"
         "from terrain_diffusion.models.sampling import sample_consistency, sample_diffusion\n"
         "from terrain_diffusion.data.transforms import laplacian_decode, signed_square", ns)
    cells = [''.join(c['source']) for c in json.loads(NB.read_text())['cells'] if c['cell_type'] == 'code']
    cells = [c for c in cells if c.startswith('# full decode')]
    assert len(cells) == 2, 'the tutorial should have two cells that start with "# full decode"'
    for c in cells: exec(c, ns)
    return ns

def _val_record(run: Path) -> dict:
    return [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines() if json.loads(l)['kind'] == 'val'][-1]

def test_pipeline_from_empty_folder_to_terrain_png(tmp_path):
    import h5py, torch
    from terrain_diffusion.eval.export import read_export_info
    from terrain_diffusion.data.metrics import spectral_slope
    from terrain_diffusion.eval.viz import save_sample_grid
    from terrain_diffusion.models.mp_layers import load_model
    work, times = tmp_path/'pipeline', {}
    work.mkdir()
    def stage(name, *args):
        t0 = time.time(); _td(args, work); times[name] = time.time() - t0
    def train_export(cfg):
        stage(f'train {cfg}', 'td_train', '-c', CFG/f'{cfg}.cfg', '--progress', 'off')
        stage(f'export {cfg}', 'td_export', '-c', f'runs/{cfg}/latest_checkpoint', '-s', '0.05', '-o', f'models/{cfg}')
        assert (work/'models'/cfg/'model.safetensors').is_file()
        return _val_record(work/'runs'/cfg)
    t_start = time.time()
    # 1. tile store from the real embedded DEM
    stage('build', 'td_data', 'build', '--source', 'real', '--out', 'tiles.h5', '--tile-size', '64', '--stride', '16', '--no-progress')
    # 2. autoencoder, 3. latents
    ae = train_export('autoencoder')
    assert json.loads((work/'models'/'autoencoder'/'export.json').read_text())['kind'] == 'autoencoder'
    r = run_cli(['td_sample', 'models/autoencoder', '-n', '1', '-o', 'nope'], cwd=work)   # an autoencoder has no sampler
    assert r.returncode == 2 and "'autoencoder'" in r.stderr and not (work/'nope').exists(), r.stderr
    assert np.isfinite(ae['val/mae_m'])
    stage('encode', 'td_data', 'encode', 'tiles.h5', 'models/autoencoder', '--no-progress')
    with h5py.File(work/'tiles.h5') as h5:
        assert h5['latents'].shape[1:] == (8, 8, 8, 8)
        real = h5['elevation'][np.sort(h5['val_index'][:])]
        px = [float(v) for v in np.median(h5['pixel_size_m'][:], 0)]
    # 4. diffusion decoder and base model, 5. their consistency students (teachers = the exported models)
    for cfg in ('diffusion_decoder', 'diffusion_base', 'consistency_decoder', 'consistency_base'):
        assert np.isfinite(train_export(cfg)['val/loss'])
    assert read_export_info(work/'models/consistency_decoder')['cond_img_channels'] == 4
    assert read_export_info(work/'models/consistency_base')['image_shape'] == [5, 8, 8]
    # 6. generation: 2-step base -> latents + low frequencies -> 2-step decoder -> recomposition -> metres -> PNG
    t0 = time.time()
    ns = _decode_functions()
    gen = ns['generate_terrain'](work/'models/consistency_base', work/'models/consistency_decoder', n=16, seed=0)
    png = save_sample_grid(gen[:8], work/'terrain.png', pixel_size_m=px)
    times['generate'] = time.time() - t0
    total = time.time() - t_start
    assert gen.shape == (16, 64, 64) and torch.isfinite(gen).all()
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 10_000
    # plausible metres: the generated mean lies within the real tiles' range (Jacksboro: ~200-900 m)
    assert real.min() < float(gen.mean()) < real.max()
    slope_gen, slope_real = spectral_slope(gen.numpy(), px), spectral_slope(real, px)
    assert np.isfinite(slope_gen) and abs(slope_gen - slope_real) < 2.0, (slope_gen, slope_real)  # tiny run: plumbing, not quality
    # 7. the coarse-map GAN on the same store
    gan = train_export('gan')
    assert np.isfinite(gan['val/w1_elevation'])
    G = load_model(work/'models/gan').eval()
    with torch.no_grad(): coarse = G(torch.randn(2, G.latent_channels, 10, 10))
    assert coarse.shape == (2, 1, 8, 8) and torch.isfinite(coarse).all()
    print(f"\npipeline: {total:.0f} s to the terrain PNG ({sum(times.values()):.0f} s with the GAN); spectral slope "
          f"generated {slope_gen:.2f}, real {slope_real:.2f}\n" + '  '.join(f'{k}: {v:.1f}s' for k, v in times.items()))
