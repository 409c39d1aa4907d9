"""Does the main job's map look like the terrain it learned from? Spectrum slope and slope distribution (W1) of a
`td_generate` map against the training DEM's 128 px tiles, next to synthetic-generator maps of the same size.

    td_generate --model runs/quickstart_model --region 0 0 256 256 --seed 0 --window 64 -o runs/terrain   # README line 1
    OMP_NUM_THREADS=1 python bench/bench_main_job_map.py [--map runs/terrain/elevation.npy --model runs/quickstart_model]
                                                         [--synthetic-seeds 8] [--model-seeds 1 2 --window 64] [--own-samples 64]

The estimators are those of `terrain_diffusion.data.metrics` (`spectral_slope`, `slope`, `wasserstein_1d`), used as
the generation notebook (nbs/eval/45_generate.ipynb) uses them: every map is cut into 128 px tiles, the spectral slope
is fitted to the tiles' mean power spectrum, and W1 compares all slope values of the tiles with all slope values of
the real tiles. Pixel size: `--pixel-size DY DX` (metres), else the model's `export.json`, else the DEM's spacing.

One 256 px map is four tiles and the real DEM gives six, so both figures are noisy. The synthetic generator
(`terrain_diffusion.data.synthetic.synthetic_terrain`, the maps the tests train on) is scored for
`--synthetic-seeds` seeds and reported as mean ± standard deviation [min, max]; with `--model-seeds`, the model
makes maps of the same region with those seeds too (as td_generate would), so the model's figure has a spread as well.
With `--own-samples N`, the model's own window-sized samples (`sample_model`, no windows, no blending) are scored
against random real crops of the same size, to tell the model's errors from the windowed sampler's.
"""
import argparse, json, time
from pathlib import Path

import numpy as np
from terrain_diffusion.data.dem_io import SAMPLE_DEMS, open_dem, sample_dem
from terrain_diffusion.data.metrics import slope, spectral_slope, wasserstein_1d
from terrain_diffusion.data.synthetic import synthetic_terrain

ROOT = Path(__file__).resolve().parents[1]


def tiles(a, n=128):
    "Non-overlapping n x n tiles of a map, row-major, (N, n, n)."
    return np.stack([a[i:i + n, j:j + n] for i in range(0, a.shape[0] - n + 1, n) for j in range(0, a.shape[1] - n + 1, n)])


def score(m, real, px, tile):
    "Spectral slope of the map's tiles and W1 of their slope values to the real tiles'."
    t = tiles(np.asarray(m, np.float64), tile)
    return {'spectral_slope': spectral_slope(t, px), 'w1_slope': wasserstein_1d(slope(t, px), slope(real, px)),
            'mean_slope': float(slope(t, px).mean())}


def spread(rows, k):
    v = np.array([r[k] for r in rows])
    return f"{v.mean():.4g} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2g} [{v.min():.4g}, {v.max():.4g}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--map', default=str(ROOT/'runs'/'terrain'/'elevation.npy'), help='elevation.npy written by td_generate')
    ap.add_argument('--model', default=str(ROOT/'runs'/'quickstart_model'), help='the td_export folder (pixel size; --model-seeds)')
    ap.add_argument('--pixel-size', type=float, nargs=2, metavar=('DY', 'DX'), default=None)
    ap.add_argument('--dem', default='jacksboro', help=f"training DEM: a sample name ({', '.join(SAMPLE_DEMS)}) or a DEM file")
    ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--synthetic-seeds', type=int, default=8)
    ap.add_argument('--model-seeds', type=int, nargs='*', default=[], help='also generate and score the same region with these seeds')
    ap.add_argument('--region', type=int, nargs=4, default=None, metavar=('X0', 'Y0', 'W', 'H'),
                    help='region for --model-seeds (default: 0 0 and the map\'s size)')
    ap.add_argument('--steps', type=int, default=None, help='sampler steps for --model-seeds (default: td_generate\'s)')
    ap.add_argument('--phases', type=int, default=None, help='td_generate --phases for --model-seeds')
    ap.add_argument('--window', type=int, default=None, help='td_generate --window for --model-seeds')
    ap.add_argument('--own-samples', type=int, default=0, help="also score N of the model's own window-sized samples against real crops")
    ap.add_argument('--json', default=None, help='also write the figures to this file')
    a = ap.parse_args()

    m = np.load(a.map)
    info = {}
    if Path(a.model, 'export.json').is_file():
        from terrain_diffusion.eval.export import read_export_info
        info = read_export_info(a.model)
    dem = sample_dem(a.dem) if a.dem in SAMPLE_DEMS else open_dem(a.dem)
    px = tuple(a.pixel_size or info.get('pixel_size_m') or dem.spacing_m)
    real = tiles(dem.read(0, dem.shape[0], 0, dem.shape[1]).astype(np.float64), a.tile)
    sr = spectral_slope(real, px)
    H, W = m.shape
    print(f"map {a.map}: {H}x{W} px ({len(tiles(m, a.tile))} tiles of {a.tile} px), pixel size {px[0]:.2f} x {px[1]:.2f} m; "
          f"real: {dem.name} {dem.shape[0]}x{dem.shape[1]} px ({len(real)} tiles), spectral slope {sr:.3f}, "
          f"mean slope {slope(real, px).mean():.4f}")

    gen = score(m, real, px, a.tile)
    syn = [score(synthetic_terrain(H, W, seed=s), real, px, a.tile) for s in range(a.synthetic_seeds)]
    more = []
    if a.model_seeds:
        from terrain_diffusion.eval.generate import generate_elevation
        region = tuple(a.region) if a.region else (0, 0, W, H)
        for s in a.model_seeds:
            t0 = time.time(); e, _ = generate_elevation(a.model, region, seed=s, steps=a.steps, phases=a.phases, window=a.window)
            more.append(score(e, real, px, a.tile)); print(f"  generated seed {s} in {time.time() - t0:.0f} s")

    print(f"\n{'':34s}{'spectral slope':>16s}{'|Δ| to real':>13s}{'W1 slope':>10s}{'mean slope':>12s}")
    print(f"{'real tiles':34s}{sr:16.3f}{'':>13s}{'':>10s}{slope(real, px).mean():12.4f}")
    print(f"{'the map':34s}{gen['spectral_slope']:16.3f}{abs(gen['spectral_slope'] - sr):13.3f}{gen['w1_slope']:10.4f}{gen['mean_slope']:12.4f}")
    for s, r in zip(a.model_seeds, more):
        print(f"{f'model, seed {s}':34s}{r['spectral_slope']:16.3f}{abs(r['spectral_slope'] - sr):13.3f}{r['w1_slope']:10.4f}{r['mean_slope']:12.4f}")
    for s, r in enumerate(syn):
        print(f"{f'synthetic, seed {s}':34s}{r['spectral_slope']:16.3f}{abs(r['spectral_slope'] - sr):13.3f}{r['w1_slope']:10.4f}{r['mean_slope']:12.4f}")
    if a.own_samples:
        from terrain_diffusion.eval.export import sample_model
        from terrain_diffusion.models.mp_layers import load_model
        x, _ = sample_model(load_model(a.model), info, a.own_samples, seed=0, steps=a.steps or 32)
        x = x[:, 0].numpy().astype(np.float64); n = x.shape[-1]
        d = dem.read(0, dem.shape[0], 0, dem.shape[1]).astype(np.float64); rng = np.random.default_rng(0)
        crops = np.stack([d[i:i + n, j:j + n] for i, j in zip(rng.integers(0, d.shape[0] - n + 1, 256), rng.integers(0, d.shape[1] - n + 1, 256))])
        print(f"{f'own {n} px samples ({len(x)}) vs real crops':34s}{spectral_slope(x, px):16.3f}{abs(spectral_slope(x, px) - spectral_slope(crops, px)):13.3f}"
              f"{wasserstein_1d(slope(x, px), slope(crops, px)):10.4f}{slope(x, px).mean():12.4f}  (real crops: spectral slope "
              f"{spectral_slope(crops, px):.3f}, mean slope {slope(crops, px).mean():.4f})")
    allg = [gen] + more
    print(f"\nspectral slope: real {sr:.3f}; map {gen['spectral_slope']:.3f} (|Δ| {abs(gen['spectral_slope'] - sr):.3f}, target ≤ 0.3)")
    if more:
        d = [{'d': abs(r['spectral_slope'] - sr)} for r in allg]
        print(f"  model over {len(allg)} seeds: {spread(allg, 'spectral_slope')}, |Δ| {spread(d, 'd')}")
    print(f"W1 of slope to the real tiles: map {gen['w1_slope']:.4f}; synthetic ({len(syn)} seeds) {spread(syn, 'w1_slope')}")
    if more: print(f"  model over {len(allg)} seeds: {spread(allg, 'w1_slope')}")
    print(f"synthetic spectral slope: {spread(syn, 'spectral_slope')}")
    if a.json:
        Path(a.json).write_text(json.dumps({'pixel_size_m': px, 'real_spectral_slope': sr, 'map': gen, 'model_seeds': dict(zip(map(str, a.model_seeds), more)),
                                            'synthetic': syn}, indent=2))


if __name__ == '__main__':
    main()
