"Process-level tests of `td_data` (terrain_diffusion.data.cli): real subprocesses, exit statuses, no partial stores."
import os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import h5py
import pytest
import torch

CLI = [sys.executable, '-c', 'import sys; from terrain_diffusion.data.cli import main; sys.exit(main())']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}

def td_data(*args, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)

def assert_bad_input(r, *expect):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip('\n').split('\n')
    assert len(lines) == 1, r.stderr
    assert 'Traceback' not in r.stderr and lines[0].startswith('td_data: error: ')
    for e in expect: assert e in lines[0], lines[0]

def no_leftovers(folder: Path, *names):
    for n in names: assert not (folder / n).exists(), n
    assert not [p for p in folder.iterdir() if '.tmp-' in p.name], list(folder.iterdir())

def test_build_synthetic(tmp_path):
    r = td_data('build', '--source', 'synthetic', '--n-maps', 3, '--map-size', 128, '--tile-size', 64,
                '--out', tmp_path / 'syn.h5')
    assert r.returncode == 0, r.stderr
    assert 'wrote' in r.stdout
    with h5py.File(tmp_path / 'syn.h5', 'r') as h5:
        assert h5['elevation'].shape == (12, 64, 64) and h5['lowfreq'].shape == (12, 10, 10)
        assert h5.attrs['n_train'] == 6 and h5.attrs['n_val'] == 6
        for k in ('elevation', 'residual', 'lowfreq'): assert h5.attrs[f'{k}_std'] > 0
    no_leftovers(tmp_path)

def test_build_real_twice_identical_and_disjoint(tmp_path):
    for name in ('a.h5', 'b.h5'):
        r = td_data('build', '--source', 'real', '--tile-size', 64, '--stride', 32, '--out', tmp_path / name, '--no-progress')
        assert r.returncode == 0, r.stderr
        assert r.stderr == ''
    with h5py.File(tmp_path / 'a.h5', 'r') as a, h5py.File(tmp_path / 'b.h5', 'r') as b:
        for k in ('elevation', 'residual', 'lowfreq', 'split', 'origin', 'train_index', 'val_index'):
            np.testing.assert_array_equal(a[k][:], b[k][:])
        for k in ('elevation_mean', 'residual_std', 'lowfreq_std'): assert a.attrs[k] == b.attrs[k]
        tr, va = set(a['train_index'][:]), set(a['val_index'][:])
        assert tr and va and not tr & va and len(tr | va) == a['elevation'].shape[0]
        # train and val regions do not overlap in rows of the DEM
        o, T = a['origin'][:], a.attrs['tile_size']
        assert o[sorted(tr)][:, 0].max() + T <= o[sorted(va)][:, 0].min()

def test_build_from_files(tmp_path):
    import matplotlib.cbook as cbook
    shutil.copy(cbook.get_sample_data('topobathy.npz', asfileobj=False), tmp_path / 'tb.npz')
    e = np.random.default_rng(0).normal(100, 10, (80, 96)).astype(np.float32)
    e[:10, :10] = -9999
    np.save(tmp_path / 'e.npy', e)
    r = td_data('build', '--source', tmp_path / 'tb.npz', tmp_path / 'e.npy', '--nodata', -9999, '--spacing-m', 30,
                '--tile-size', 32, '--val-fraction', 0.2, '--out', tmp_path / 'f.h5', '--no-progress')
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / 'f.h5', 'r') as h5:
        assert set(h5['source'][:]) == {0, 1}
        assert h5['pixel_size_m'][h5['source'][:] == 1][0].tolist() == [30.0, 30.0]
        assert (h5['valid_fraction'][:] < 1).any() and not np.isnan(h5['elevation'][:]).any()

@pytest.fixture
def bad_files(tmp_path):
    np.save(tmp_path / 'cube.npy', np.zeros((3, 16, 16), np.float32))
    np.save(tmp_path / 'line.npy', np.zeros(100, np.float32))
    np.save(tmp_path / 'void.npy', np.full((64, 64), np.nan, np.float32))
    np.save(tmp_path / 'void16.npy', np.full((64, 64), -32768, np.int16))
    np.save(tmp_path / 'small.npy', np.ones((40, 40), np.float32))
    (tmp_path / 'corrupt.npz').write_bytes(b'PK\x03\x04 this is not a zip archive')
    (tmp_path / 'corrupt.h5').write_bytes(b'\x89HDF\r\n\x1a\n' + os.urandom(200))
    (tmp_path / 'model').mkdir()
    return tmp_path

@pytest.mark.parametrize('source,expect', [
    ('missing.npy', ['missing.npy', 'no such file']),
    ('cube.npy', ['cube.npy', 'expected a 2-D elevation grid', '(3, 16, 16)']),
    ('line.npy', ['line.npy', 'expected a 2-D elevation grid']),
    ('void.npy', ['void.npy', 'every pixel is nodata']),
    ('void16.npy', ['void16.npy', 'every pixel is nodata']),
    ('corrupt.npz', ['corrupt.npz', 'cannot read as .npz']),
    ('small.npy', ['small.npy', '40x40', 'smaller than tile size 64']),
])
def test_build_bad_input(bad_files, source, expect):
    # a valid source first: the bad one must still stop everything before anything is written
    r = td_data('build', '--source', 'real', bad_files / source, '--tile-size', 64, '--out', bad_files / 'out.h5')
    assert_bad_input(r, *expect)
    no_leftovers(bad_files, 'out.h5')

def test_tile_larger_than_real_dem(tmp_path):
    r = td_data('build', '--source', 'real', '--tile-size', 512, '--out', tmp_path / 'out.h5')
    assert_bad_input(r, 'jacksboro', '344x403', 'smaller than tile size 512')
    no_leftovers(tmp_path, 'out.h5')

def test_failed_build_keeps_previous_store(tmp_path):
    r = td_data('build', '--source', 'synthetic', '--n-maps', 1, '--map-size', 128, '--out', tmp_path / 's.h5', '--no-progress')
    assert r.returncode == 0, r.stderr
    before = (tmp_path / 's.h5').read_bytes()
    r = td_data('build', '--source', tmp_path / 'nope.tif', '--out', tmp_path / 's.h5')
    assert_bad_input(r, 'nope.tif', 'no such file')
    assert (tmp_path / 's.h5').read_bytes() == before
    no_leftovers(tmp_path)

def test_encode_corrupt_store(bad_files):
    before = (bad_files / 'corrupt.h5').read_bytes()
    r = td_data('encode', bad_files / 'corrupt.h5', bad_files / 'model')
    assert_bad_input(r, 'corrupt.h5', 'not a readable HDF5 file')
    assert (bad_files / 'corrupt.h5').read_bytes() == before
    no_leftovers(bad_files)

def test_encode_missing_store_and_model(bad_files):
    assert_bad_input(td_data('encode', bad_files / 'none.h5', bad_files / 'model'), 'none.h5', 'no such file')

def test_encode_with_a_folder_that_is_not_a_model(tmp_path):
    r = td_data('build', '--source', 'synthetic', '--n-maps', 1, '--map-size', 128, '--out', tmp_path / 's.h5', '--no-progress')
    assert r.returncode == 0, r.stderr
    (tmp_path / 'model').mkdir()
    assert_bad_input(td_data('encode', tmp_path / 's.h5', tmp_path / 'model'), 'config.json not found')
    with h5py.File(tmp_path / 's.h5', 'r') as h5: assert 'latents' not in h5

class PoolEncoder(torch.nn.Module):
    "Untrained stand-in with the autoencoder contract: 8x average pool + 1x1 conv."
    def __init__(self):
        super().__init__(); torch.manual_seed(0); self.conv = torch.nn.Conv2d(1, 4, 1)
    def preencode(self, x, cond=None):
        m = self.conv(torch.nn.functional.avg_pool2d(x, 8)); return m, torch.full_like(m, -3.0)

def test_encode_and_datasets_in_worker_processes(tmp_path):
    "encode_store with a stand-in, then every dataset through a DataLoader with 2 worker processes."
    from terrain_diffusion.data.store import encode_store
    from terrain_diffusion.registry import registry
    import terrain_diffusion.data.datasets  # noqa: F401  (registers the datasets)
    r = td_data('build', '--source', 'real', '--tile-size', 64, '--stride', 32, '--out', tmp_path / 'r.h5', '--no-progress')
    assert r.returncode == 0, r.stderr
    encode_store(tmp_path / 'r.h5', PoolEncoder(), batch_size=16, progress=False)
    shapes = {'elevation': {'image': (1, 32, 32)}, 'autoencoder': {'image': (1, 32, 32)},
              'latents': {'image': (5, 8, 8)}, 'coarse': {'image': (1, 8, 8)},
              'decoder': {'image': (1, 32, 32), 'cond_img': (4, 32, 32), 'lowfreq': (1, 6, 6), 'ground_truth': (1, 32, 32)}}
    for name, expect in shapes.items():
        kw = {} if name in ('latents', 'coarse') else {'crop_size': 32}
        ds = registry.dataset.get(name)(tmp_path / 'r.h5', **kw)
        dl = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
        n = 0
        for b in dl:
            assert {k: tuple(v.shape[1:]) for k, v in b.items()} == expect
            assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in b.values())
            n += len(b['image'])
        assert n == len(ds)

def test_console_script(tmp_path):
    td_data = str(Path(sys.executable).parent / 'td_data')
    r = subprocess.run([td_data, 'build', '--source', 'real', '--tile-size', '512', '--out', str(tmp_path / 'x.h5')],
                       capture_output=True, text=True, env=ENV)
    assert_bad_input(r, 'smaller than tile size 512')

def test_encode_with_a_saved_autoencoder(tmp_path):
    "td_data encode loads a real saved autoencoder (config.json + model.safetensors) and adds latents to the store."
    from terrain_diffusion.models.autoencoder import EDMAutoencoder
    store = tmp_path / 's.h5'
    r = subprocess.run([*CLI, 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '128', '--tile-size', '32',
                        '--out', str(store)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    torch.manual_seed(0)
    EDMAutoencoder(in_channels=1, out_channels=1, latent_channels=2, image_size=32, model_channels=8,
                   model_channel_mults=(1, 1, 1, 1), layers_per_block=1).save_pretrained(tmp_path / 'ae')
    td_data = str(Path(sys.executable).parent / 'td_data')
    r = subprocess.run([td_data, 'encode', str(store), str(tmp_path / 'ae')], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    with h5py.File(store) as f:
        assert f['latents'].shape[1:] == (8, 4, 4, 4) and f.attrs['latent_channels'] == 2
