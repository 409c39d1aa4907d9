"""Data-loading throughput: 64x64 crops per second from a tile store, one process (target >= 2,000/s).

    OMP_NUM_THREADS=1 python bench/bench_data.py [--seconds 3]

Builds a synthetic store (16 maps of 256 px, 128-px tiles) in a temporary folder, then times `ds[i]` for the
registered datasets, reading lazily from HDF5 and with `cache=True`.
"""
import argparse, tempfile, time
from pathlib import Path
import torch
import torch.nn.functional as F
from terrain_diffusion.data.store import build_store, encode_store, synthetic_dems
from terrain_diffusion.data.datasets import autoencoder_dataset, elevation_dataset, decoder_dataset

class PoolEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__(); self.conv = torch.nn.Conv2d(1, 4, 1)
    def preencode(self, x, cond=None):
        m = self.conv(F.avg_pool2d(x, 8)); return m, torch.full_like(m, -3.0)

def rate(ds, seconds):
    torch.manual_seed(0); n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(len(ds)):
            ds[i]; n += 1
    return n / (time.perf_counter() - t0)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--seconds', type=float, default=3.0); a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        store = build_store(Path(d) / 's.h5', synthetic_dems(16, 256), tile_size=128, progress=False)
        with torch.no_grad(): encode_store(store, PoolEncoder(), progress=False)
        for name, fn in [('elevation', elevation_dataset), ('autoencoder', autoencoder_dataset), ('decoder', decoder_dataset)]:
            for cache in (False, True):
                r = rate(fn(store, crop_size=64, cache=cache), a.seconds)
                print(f"{name:12s} cache={str(cache):5s} {r:8.0f} crops/s  {'ok' if r >= 2000 else 'BELOW 2000'}")
