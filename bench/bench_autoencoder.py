"""Autoencoder quickstart: how far training lowers the reconstruction error in metres, per perceptual term.

Builds the quickstart store (`td_data build --source real --tile-size 64 --stride 16`: the bundled real DEM) in a
temporary folder, then trains configs/quickstart/autoencoder.yaml in-process with each perceptual term and prints
the validation metrics (EMA weights, posterior mean) of the untrained and the trained model.

    OMP_NUM_THREADS=1 python bench/bench_autoencoder.py [--epochs N] [--perceptual pyramid_spectrum slope_curvature none]
"""
import argparse, json, tempfile, time
from pathlib import Path
import torch
import terrain_diffusion.trainers.autoencoder  # registers the trainer (until it is in BUILTIN_MODULES)
from terrain_diffusion.data.cli import main as td_data
from terrain_diffusion.training.train import TrainingRun

CFG = Path(__file__).resolve().parents[1]/'configs'/'quickstart'/'autoencoder.yaml'
KEYS = ('val/mae_m', 'val/rmse_m', 'val/slope_mae', 'val/spectrum_distance', 'val/l1')

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--epochs', type=int, default=None, help='default: the config')
    ap.add_argument('--perceptual', nargs='+', default=['pyramid_spectrum', 'slope_curvature', 'none'])
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        store = Path(d)/'quickstart.h5'
        assert td_data(['build', '--source', 'real', '--tile-size', '64', '--stride', '16', '--out', str(store), '--no-progress']) == 0
        rows = []
        for p in a.perceptual:
            ov = {'logging.save_dir': f'{d}/{p}', 'train_dataset.path': str(store), 'val_dataset.path': str(store),
                  'autoencoder.perceptual': p, **({'training.epochs': a.epochs} if a.epochs else {}), 'evaluation.validate_epochs': 0,
                  'logging.temp_save_epochs': 0}
            run = TrainingRun(CFG, ov, progress='off')
            before = run.evaluate(); t0 = time.time()
            run.fit(); after = run.evaluate(); dt = time.time() - t0
            run.close()
            rows.append((p, before, after, dt, run.state['step']))
            print(json.dumps({'perceptual': p, 'steps': run.state['step'], 'seconds': round(dt, 1),
                              'untrained': {k: round(before[k], 4) for k in KEYS},
                              'trained': {k: round(after[k], 4) for k in KEYS},
                              'mae_m_ratio': round(before['val/mae_m'] / after['val/mae_m'], 2)}), flush=True)
        print('\n| perceptual | steps | MAE (m) untrained -> trained | ratio | RMSE (m) | slope MAE (m/m) | spectrum distance |')
        print('|---|---|---|---|---|---|---|')
        for p, b, t, dt, n in rows:
            print(f"| {p} | {n} | {b['val/mae_m']:.1f} -> {t['val/mae_m']:.1f} | {b['val/mae_m'] / t['val/mae_m']:.1f}x | "
                  f"{t['val/rmse_m']:.1f} | {t['val/slope_mae']:.4f} | {t['val/spectrum_distance']:.3f} |")

if __name__ == '__main__': main()
