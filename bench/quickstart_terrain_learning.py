"""Does the main job learn? Evaluate the quickstart run's EMA next to the same model untrained.

Both are evaluated by the trainer's own `evaluate()` on the same validation tiles, noise and sampling seed
(configs/quickstart/terrain.cfg `[evaluation]`, with more samples here): the validation loss and the terrain-metric
distances of generated terrain to the validation tiles (metres). Run after the main job:

    td_data build --source real --out data/quickstart.h5 --tile-size 64 --stride 16
    td_train -c configs/quickstart/terrain.cfg
    OMP_NUM_THREADS=2 python bench/quickstart_terrain_learning.py [--run runs/quickstart_terrain]
"""
import argparse, json
from pathlib import Path

import torch
from terrain_diffusion.data.metrics import terrain_metrics
from terrain_diffusion.training.train import TrainingRun

ROOT = Path(__file__).resolve().parents[1]
KEYS = ['val/loss', 'val/mse', 'val/spectral_slope_error', 'val/spectrum_distance', 'val/w1_slope', 'val/w1_curvature',
        'val/w1_elevation']


def evaluate(ckpt, n_samples):
    "The trainer's evaluation of the run's checkpoint (or of the untrained model when `ckpt` is None), and real crops' scores."
    over = {'evaluation.n_samples': n_samples, 'evaluation.max_reference': 256}
    run = TrainingRun(ROOT/'configs'/'quickstart'/'terrain.cfg', over, ckpt=ckpt, debug_run=True, progress='off')
    try:
        tr = run.trainer
        ref = tr._reference_metres(tr._val_items(256))
        torch.manual_seed(0)
        crops = torch.stack([tr.train_data[int(i)]['image'] for i in torch.randint(0, len(tr.train_data), (n_samples,))])
        real = terrain_metrics(tr._metres(crops, {})[:, 0].numpy(), ref[:, 0].numpy(), tr.pixel_size)
        return tr.evaluate(), dict(run.state), {f'val/{k}': v for k, v in real.items()}
    finally: run.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--run', default=str(ROOT/'runs'/'quickstart_terrain'))
    ap.add_argument('--n-samples', type=int, default=64)
    ap.add_argument('--json', default=None, help='also write the figures to this file')
    a = ap.parse_args()
    trained, st, real = evaluate(Path(a.run)/'latest_checkpoint', a.n_samples)
    untrained, _, _ = evaluate(None, a.n_samples)
    print(f"quickstart terrain model after {st['step']} steps ({st['seen']} images), shorter EMA (sigma_rel 0.05), "
          f"{a.n_samples} samples vs validation tiles; 'train crops': real training crops scored the same way")
    print(f"{'metric':28s} {'untrained':>12s} {'trained':>12s} {'untrained/trained':>18s} {'train crops':>12s}")
    for k in KEYS:
        u, t = untrained.get(k, float('nan')), trained.get(k, float('nan'))
        ratio = u / t if k not in ('val/loss',) and t else float('nan')
        print(f"{k:28s} {u:12.4g} {t:12.4g} {ratio:18.2f} {real.get(k, float('nan')):12.4g}")
    print(f"spectral slope: reference {trained['val/spectral_slope_reference']:.3f}, trained {trained['val/spectral_slope_generated']:.3f}, "
          f"untrained {untrained['val/spectral_slope_generated']:.3f}, train crops {real['val/spectral_slope_generated']:.3f}")
    if a.json: Path(a.json).write_text(json.dumps({'untrained': untrained, 'trained': trained, 'train_crops': real, 'state': st}, indent=2))


if __name__ == '__main__':
    main()
