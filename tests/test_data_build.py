"Process tests of `td_data build` on user data: the refusals of issue 13, signals, and stores from DEMs bigger than memory (issue 16)."
import hashlib, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import h5py
import pytest
import tifffile
from conftest import run_cli

TD_DATA = [str(Path(sys.executable).parent / 'td_data')]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, GeoKeyDirectory (projected CRS), GDAL_NODATA
SCALE, TIEPOINT, GEOKEYS, NODATA = 33550, 33922, 34735, 42113

def build(*args): return run_cli(['td_data', 'build', *map(str, args), '--no-progress'])

def snapshot(folder: Path) -> dict:
    "name -> sha256 of every file in `folder` (hidden ones included)."
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

def assert_refused(r, folder, before, *expect):
    "Exit 2, one line naming the problem, no traceback, and the folder exactly as it was (no store, no temp file)."
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip('\n').split('\n')
    assert len(lines) == 1 and lines[0].startswith('td_data: error: ') and 'Traceback' not in r.stderr, r.stderr
    for e in expect: assert e in lines[0], lines[0]
    assert snapshot(folder) == before

def terrain(h, w, seed=0):
    "Smooth random terrain in metres (a few hundred metres of relief)."
    rng = np.random.default_rng(seed)
    z = np.cumsum(np.cumsum(rng.normal(0, 1, (h, w)), 0), 1)
    return (300 + 200 * (z - z.mean()) / z.std()).astype(np.float32)

def geotags(row=0, col=0, scale=30.0, nodata=None):
    t = [(SCALE, 'd', 3, (scale, scale, 0.0), True), (TIEPOINT, 'd', 6, (0, 0, 0, 5e5 + col * scale, 4e6 - row * scale, 0), True),
         (GEOKEYS, 'H', 8, (1, 1, 0, 1, 1024, 0, 1, 1), True)]
    return t + ([(NODATA, 's', 0, str(nodata), True)] if nodata is not None else [])

# ---- issue 13: every case replayed as described, now one line, exit 2, every file unchanged ----

def test_out_onto_a_user_file_is_refused(tmp_path):
    (tmp_path / 'train.py').write_text('print("a user script")\n')
    with h5py.File(tmp_path / 'results.h5', 'w') as h5: h5['x'] = np.arange(5)
    before = snapshot(tmp_path)
    for name in ('train.py', 'results.h5'):
        r = build('--source', 'real', '--out', tmp_path / name)
        assert_refused(r, tmp_path, before, name, 'exists and is not a tile store written by td_data build')
    # a store that td_data wrote is replaced
    assert build('--source', 'real', '--out', tmp_path / 's.h5').returncode == 0
    r = build('--source', 'synthetic', '--n-maps', 1, '--map-size', 128, '--out', tmp_path / 's.h5')
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / 's.h5') as h5: assert h5.attrs['n_tiles'] == 4

def test_flat_dem_is_refused(tmp_path):
    np.save(tmp_path / 'flat.npy', np.full((256, 256), 120.0, np.float32))
    before = snapshot(tmp_path)
    r = build('--source', tmp_path / 'flat.npy', '--out', tmp_path / 'out.h5')
    assert_refused(r, tmp_path, before, 'flat.npy', 'the DEM is flat (every valid pixel is 120 m)')

def test_undeclared_nodata_in_a_geotiff_is_refused(tmp_path):
    "The issue's case: a GeoTIFF without a nodata tag whose -9999 voids would have become elevation in 40 of 64 tiles."
    z = terrain(512, 512); z[:320, :] = -9999             # 5 of 8 tile rows: 40 of 64 tiles of 64 px
    tifffile.imwrite(tmp_path / 'dem.tif', z, extratags=geotags())
    before = snapshot(tmp_path)
    r = build('--source', tmp_path / 'dem.tif', '--out', tmp_path / 'out.h5', '--val-fraction', 0)
    assert_refused(r, tmp_path, before, 'dem.tif', 'are exactly -9999 m', '--nodata -9999')
    r = build('--source', tmp_path / 'dem.tif', '--out', tmp_path / 'out.h5', '--val-fraction', 0, '--nodata', -9999)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / 'out.h5') as h5: assert h5.attrs['n_tiles'] == 24 and h5['elevation'][:].min() > -9000

def test_geotiff_nodata_tag_is_honoured(tmp_path):
    z = terrain(256, 256); z[:100, :100] = -32767
    tifffile.imwrite(tmp_path / 'dem.tif', z, extratags=geotags(nodata=-32767), tile=(64, 64), compression='zlib')
    r = build('--source', tmp_path / 'dem.tif', '--out', tmp_path / 'out.h5', '--tile-size', 64)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / 'out.h5') as h5:
        assert h5['elevation'][:].min() > -2000 and (h5['valid_fraction'][:] < 1).any()

def test_value_below_the_ocean_floor_is_refused(tmp_path):
    z = terrain(256, 256); z[10:12, 40:44] = -32768.0
    np.save(tmp_path / 'z.npy', z)
    before = snapshot(tmp_path)
    r = build('--source', tmp_path / 'z.npy', '--out', tmp_path / 'out.h5')
    assert_refused(r, tmp_path, before, 'z.npy', '8 pixels are -32768 m, below the deepest ocean floor')

@pytest.mark.parametrize('args,expect', [
    (['--stride', 0], '--stride must be a positive number of pixels, got 0'),
    (['--stride', -64], '--stride must be a positive number of pixels, got -64'),
    (['--stride', 12], 'stride 12 must be a positive multiple of factor 8'),
    (['--min-valid', -1], '--min-valid must be in [0, 1]'),
    (['--min-valid', 1.5], '--min-valid must be in [0, 1]'),
    (['--workers', 0], '--workers must be at least 1'),
])
def test_bad_options_are_refused(tmp_path, args, expect):
    (tmp_path / 'keep.txt').write_text('x')
    before = snapshot(tmp_path)
    assert_refused(build('--source', 'real', '--out', tmp_path / 'out.h5', *args), tmp_path, before, expect)

def test_mosaic_with_mismatched_pixel_size_is_refused(tmp_path):
    (tmp_path / 'tiles').mkdir()
    tifffile.imwrite(tmp_path / 'tiles' / 'a.tif', terrain(128, 128), extratags=geotags())
    tifffile.imwrite(tmp_path / 'tiles' / 'b.tif', terrain(128, 128, 1), extratags=geotags(col=128, scale=90.0))
    before = snapshot(tmp_path)
    r = build('--source', tmp_path / 'tiles', '--out', tmp_path / 'out.h5')
    assert_refused(r, tmp_path, before, 'b.tif: pixel size (90, 90) differs from a.tif')

# ---- signals ----

def start_slow_build(tmp_path, *extra):
    "A build of a 3000x3000 DEM, started as a real process; returns it once its temp store (named after the target and its pid) exists."
    if not (tmp_path / 'big.npy').exists(): np.save(tmp_path / 'big.npy', terrain(3000, 3000))
    p = subprocess.Popen(TD_DATA + ['build', '--source', str(tmp_path / 'big.npy'), '--out', str(tmp_path / 'big.h5'),
                                    '--tile-size', '64', '--stride', '32', '--no-progress', *map(str, extra)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (tmp_path / f'.big.h5.tmp-{p.pid}').exists():
        assert p.poll() is None and time.time() - t0 < 120, p.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    return p

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize('workers', [1, 2])
def test_signal_stops_a_build_with_one_line(tmp_path, sig, workers):
    (tmp_path / 'notes.txt').write_text('mine')
    p = start_slow_build(tmp_path, '--workers', workers)
    before = {k: v for k, v in snapshot(tmp_path).items() if '.tmp-' not in k}
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, (p.returncode, err)
    assert err.strip('\n').split('\n') == [f'td_data: stopped by {sig.name}; nothing was written or changed (temporary files removed)'], err
    assert snapshot(tmp_path) == before                     # no store, no temp file, the user's files as they were

def children(pid):
    "Pids of the direct children of `pid` (Linux /proc)."
    return [int(c) for f in Path(f'/proc/{pid}/task').glob('*/children') for c in f.read_text().split()]

@pytest.mark.skipif(not Path(f'/proc/{os.getpid()}/task/{os.getpid()}/children').exists(), reason='needs /proc/PID/task/TID/children (Linux)')
def test_a_killed_worker_ends_the_build_with_one_line(tmp_path):
    "A worker that dies (OOM killer, kill -9) ends the build: one line naming it, no store, no temp file (a multiprocessing.Pool replaced it and waited for ever)."
    (tmp_path / 'notes.txt').write_text('mine')
    p = start_slow_build(tmp_path, '--workers', 2)
    before = {k: v for k, v in snapshot(tmp_path).items() if '.tmp-' not in k}
    workers = children(p.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, (p.returncode, err)
    lines = err.strip('\n').split('\n')
    assert len(lines) == 1 and lines[0].startswith('td_data: error: worker process ') and 'ended unexpectedly (exit code -9' in lines[0], err
    assert snapshot(tmp_path) == before

def test_sigint_during_start_up_is_one_line(tmp_path):
    "Ctrl-C 0.5 s after launch lands in start-up (imports, reading the sources) or at the latest in the scan: one line, exit 1."
    np.save(tmp_path / 'big.npy', terrain(3000, 3000))
    before = snapshot(tmp_path)
    p = subprocess.Popen(TD_DATA + ['build', '--source', str(tmp_path / 'big.npy'), '--out', str(tmp_path / 'big.h5')],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5); p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1 and err.strip('\n').split('\n') == ['td_data: stopped by SIGINT; nothing was written or changed (temporary files removed)'], err
    assert snapshot(tmp_path) == before

def test_leftovers_of_a_killed_build_are_removed_by_the_next(tmp_path):
    (tmp_path / '.big.h5.tmp-notapid').write_text('not ours')
    p = start_slow_build(tmp_path)
    p.send_signal(signal.SIGKILL); p.communicate()
    left = [q for q in tmp_path.glob('.big.h5.tmp-*') if q.name != '.big.h5.tmp-notapid']
    assert len(left) == 1 and left[0].name == f'.big.h5.tmp-{p.pid}'
    np.save(tmp_path / 'small.npy', terrain(256, 256))
    r = build('--source', tmp_path / 'small.npy', '--out', tmp_path / 'big.h5')
    assert r.returncode == 0, r.stderr
    assert not left[0].exists() and (tmp_path / '.big.h5.tmp-notapid').read_text() == 'not ours'

# ---- issue 16 item 4: big DEMs, mosaics, workers ----

def stores_equal(a, b, names=('elevation', 'residual', 'lowfreq', 'valid_fraction', 'land_fraction', 'split', 'origin',
                               'source', 'pixel_size_m', 'train_index', 'val_index')):
    with h5py.File(a) as x, h5py.File(b) as y:
        for n in names: np.testing.assert_array_equal(x[n][:], y[n][:], err_msg=n)
        for k in ('elevation_mean', 'elevation_std', 'residual_mean', 'residual_std', 'lowfreq_mean', 'lowfreq_std', 'n_tiles'):
            assert x.attrs[k] == y.attrs[k], k
        return x.attrs['n_tiles']

def test_mosaic_of_four_geotiffs_equals_one_file(tmp_path):
    z = terrain(700, 600); z[300:340, 280:330] = -9999       # a void across the files' corner
    tifffile.imwrite(tmp_path / 'one.tif', z, extratags=geotags(nodata=-9999))
    (tmp_path / 'tiles').mkdir()
    for r0, r1 in [(0, 333), (333, 700)]:                  # borders on no tile or window boundary
        for c0, c1 in [(0, 301), (301, 600)]:
            tifffile.imwrite(tmp_path / 'tiles' / f'n{r0}_e{c0}.tif', z[r0:r1, c0:c1], extratags=geotags(r0, c0, nodata=-9999),
                             tile=(64, 64), compression='zlib')
    common = ['--tile-size', 64, '--stride', 48, '--val-fraction', 0.2]
    assert build('--source', tmp_path / 'one.tif', '--out', tmp_path / 'one.h5', *common).returncode == 0
    r = build('--source', tmp_path / 'tiles', '--out', tmp_path / 'mosaic.h5', *common)
    assert r.returncode == 0, r.stderr
    assert stores_equal(tmp_path / 'one.h5', tmp_path / 'mosaic.h5') > 100
    with h5py.File(tmp_path / 'mosaic.h5') as h5:             # tiles do cross the files' borders
        o = h5['origin'][:]
        assert ((o[:, 0] < 333) & (o[:, 0] + 64 > 333)).any() and ((o[:, 1] < 301) & (o[:, 1] + 64 > 301)).any()

def test_workers_give_the_same_store(tmp_path):
    z = terrain(1200, 1100); z[500:560, 100:900] = np.nan
    np.save(tmp_path / 'z.npy', z)
    for w in (1, 3):
        r = build('--source', tmp_path / 'z.npy', 'synthetic', '--n-maps', 2, '--out', tmp_path / f'w{w}.h5',
                  '--tile-size', 64, '--stride', 32, '--workers', w)
        assert r.returncode == 0, r.stderr
    assert stores_equal(tmp_path / 'w1.h5', tmp_path / 'w3.h5') > 1000

PEAK = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)   # KiB on Linux
"""

def peak_rss_mib(*args):
    "Peak RSS of one `td_data build` in a fresh process (the only child of a small parent)."
    r = subprocess.run([sys.executable, '-c', PEAK, *TD_DATA, 'build', *map(str, args), '--no-progress'],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1]) / 1024

def test_peak_memory_does_not_grow_with_the_dem(tmp_path):
    "1000^2 vs 3000^2 float32 (4 vs 36 MB; the whole-DEM build held ~5 copies, +160 MiB): peak RSS grows by < 100 MiB."
    peaks = {}
    for n in (1000, 3000):
        a = np.lib.format.open_memmap(tmp_path / f'd{n}.npy', 'w+', np.float32, (n, n))
        for r in range(0, n, 500): a[r:r + 500] = terrain(min(500, n - r), n, seed=r)
        del a
        peaks[n] = peak_rss_mib('--source', tmp_path / f'd{n}.npy', '--out', tmp_path / f's{n}.h5', '--tile-size', 128)
        (tmp_path / f'd{n}.npy').unlink(); (tmp_path / f's{n}.h5').unlink()
    assert peaks[3000] - peaks[1000] < 100, peaks
