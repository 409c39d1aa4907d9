"""`td_data build` on DEMs bigger than memory: peak RSS against DEM size, tiles/s with workers, crops/s from the store.

    OMP_NUM_THREADS=1 python bench/bench_build.py [--sizes 2000 6000 12000] [--tile-size 256] [--dir /tmp]

1. Peak RSS: for each size, a float32 `.npy` of smooth random terrain is written to --dir (memory-mapped, never
   whole in memory), and `td_data build --tile-size T --stride T` runs in a fresh process; its peak RSS is
   `getrusage(RUSAGE_CHILDREN).ru_maxrss` of a small parent that runs only that build. Target: the largest DEM's
   peak exceeds the smallest's by less than 100 MiB.
2. Workers: tiles per second of `--workers 1` and `--workers 2` on the middle size, one run each, side by side
   (wall time of the whole command, start-up included).
3. Reading: 64x64 crops per second (`elevation` dataset, lazy HDF5 reads, one process) from a store of the middle
   size written with the default per-tile LZF chunks and from the same tiles uncompressed, side by side.
Every file written is deleted at the end.
"""
import argparse, os, re, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import h5py

TD_DATA = str(Path(sys.executable).parent / 'td_data')
PEAK = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if r.returncode: sys.exit(r.stderr)
print(r.stdout.strip())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

def write_dem(path, n, seed=0):
    "A float32 n x n .npy of smooth random terrain, written band by band through a memory map."
    a = np.lib.format.open_memmap(path, 'w+', np.float32, (n, n)); rng = np.random.default_rng(seed)
    base = np.zeros(n)
    for r in range(0, n, 512):
        band = np.cumsum(np.cumsum(rng.normal(0, 1, (min(512, n - r), n)), 1), 0) + base
        base = band[-1]; a[r:r + len(band)] = (band / np.sqrt(n) * 5).astype(np.float32)
    a.flush(); del a

def build(src, out, T, workers=1):
    "Run one build in a fresh process; returns (peak RSS MiB, wall seconds of the command, tiles/s that td_data reports)."
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', PEAK, TD_DATA, 'build', '--source', str(src), '--out', str(out), '--tile-size', str(T),
                        '--stride', str(T), '--workers', str(workers), '--no-progress'], capture_output=True, text=True)
    if r.returncode: sys.exit(f"build failed: {r.stderr.strip()}")
    wall = time.perf_counter() - t0
    tps = float(re.search(r'\((\d+) tiles/s\)', r.stdout).group(1))
    return int(r.stdout.split()[-1]) / 1024, wall, tps

def crops_per_s(store, seconds):
    import torch
    from terrain_diffusion.data.datasets import elevation_dataset
    ds = elevation_dataset(store, crop_size=64); torch.manual_seed(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(min(len(ds), 2000)): ds[i]; n += 1
    return n / (time.perf_counter() - t0)

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[2000, 6000, 12000])
    ap.add_argument('--tile-size', type=int, default=256)
    ap.add_argument('--dir', default=tempfile.gettempdir())
    ap.add_argument('--seconds', type=float, default=3.0)
    a = ap.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    d = Path(tempfile.mkdtemp(prefix='bench_build_', dir=a.dir))
    try:
        peaks = {}
        print(f"{'DEM':>12s} {'MiB float32':>12s} {'peak RSS MiB':>13s} {'tiles':>7s} {'s':>6s}")
        for n in a.sizes:
            write_dem(d / f'd{n}.npy', n)
            peaks[n], dt, _ = build(d / f'd{n}.npy', d / f's{n}.h5', a.tile_size)
            with h5py.File(d / f's{n}.h5') as h5: nt = int(h5.attrs['n_tiles'])
            print(f"{n:>6d}x{n:<5d} {n * n * 4 / 2**20:12.0f} {peaks[n]:13.0f} {nt:7d} {dt:6.1f}", flush=True)
            if n != a.sizes[len(a.sizes) // 2]: (d / f'd{n}.npy').unlink(); (d / f's{n}.h5').unlink()
        grow = peaks[a.sizes[-1]] - peaks[a.sizes[0]]
        print(f"peak RSS growth {a.sizes[0]}^2 -> {a.sizes[-1]}^2: {grow:.0f} MiB  {'ok' if grow < 100 else 'ABOVE 100 MiB'}")
        m = a.sizes[len(a.sizes) // 2]
        rate = {}
        for w in (1, 2):
            _, dt, rate[w] = build(d / f'd{m}.npy', d / f'w{w}.h5', a.tile_size, w)
            print(f"{m}^2, --workers {w}: {rate[w]:7.0f} tiles/s as td_data reports it (build_store: scan, workers' start-up, compute, write); "
                  f"{dt:.1f} s for the whole command", flush=True)
        print(f"workers 2 / workers 1: {rate[2] / rate[1]:.2f}x  (machine has {os.cpu_count()} CPUs)")
        with h5py.File(d / 'w1.h5') as src, h5py.File(d / 'lzf.h5', 'w') as dst:       # the same tiles, shuffle + LZF
            for k in src:
                if k in ('elevation', 'residual', 'lowfreq'): dst.create_dataset(k, data=src[k][:], chunks=src[k].chunks, compression='lzf', shuffle=True)
                else: src.copy(k, dst)
            dst.attrs.update(src.attrs)
        for name, what in (('w1.h5', 'uncompressed per-tile chunks (default)'), ('lzf.h5', 'shuffle + LZF per-tile chunks')):
            print(f"crops/s from {what}: {crops_per_s(d / name, a.seconds):8.0f}  ({os.path.getsize(d / name) / 2**20:.0f} MiB)", flush=True)
    finally:
        for p in d.iterdir(): p.unlink()
        d.rmdir()
