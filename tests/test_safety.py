"""Nothing lost, nothing imported: each careless or unlucky use of td_train, td_export and td_sample, replayed as a
user would, ends in one line with every file that was there before still there, byte for byte.

Real subprocesses with the toy trainer (configs/examples/toy.cfg)."""
import hashlib, json, os, shutil, signal, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import run_cli, TOY_CFG

def args(save_dir, *extra, epochs=1, steps=4):
    return ['td_train', '-c', str(TOY_CFG), '-o', f'logging.save_dir={save_dir}', '-o', f'training.epochs={epochs}',
            '-o', f'training.epoch_steps={steps}', '-o', 'ema.checkpoint_every_num_steps=2', '--progress', 'lines', *extra]

def snapshot(folder: Path) -> dict:
    "Every entry under `folder`: a file's SHA-256, a link's target, a folder's mark (links are not followed)."
    out = {}
    for root, dirs, files in os.walk(folder):
        for n in dirs + files:
            p = Path(root)/n; rel = str(p.relative_to(folder))
            if p.is_symlink(): out[rel] = 'link:' + os.readlink(p)
            elif p.is_dir(): out[rel] = 'dir'
            else: out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

def one_line(r, status, *needles) -> str:
    "The single stderr line of a finished command that exited with `status`, holding `needles`."
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == status and len(lines) == 1 and 'Traceback' not in r.stderr, (r.returncode, r.stderr)
    for n in needles: assert n in lines[0], lines[0]
    return lines[0]

def hidden(save: Path) -> list:
    "Hidden entries of a save folder other than the lock, the folder id and the folder latest_checkpoint points at."
    latest = save/'latest_checkpoint'
    target = os.readlink(latest) if latest.is_symlink() else None
    return sorted(p.name for p in save.iterdir() if p.name.startswith('.') and p.name not in ('.td_train.lock', '.td_save_id', target))

@pytest.fixture(scope='module')
def base(tmp_path_factory):
    "A finished toy run (1 epoch of 4 steps): latest_checkpoint, metrics.jsonl, phema/."
    save = tmp_path_factory.mktemp('base')/'run'
    r = run_cli(args(save)); assert r.returncode == 0, r.stderr
    return save

def copy_run(base, dest):
    "A copy of a finished run, as from before save folders had a lock file (a refused start must not add one)."
    shutil.copytree(base, dest, symlinks=True); (dest/'.td_train.lock').unlink(); return dest

# --- a latest_checkpoint that cannot be resumed is an error, never a restart from step 0 ---------------------------

@pytest.mark.parametrize('flag', ['--resume-latest', None])
def test_latest_without_manifest_is_refused(base, tmp_path, flag):
    save = copy_run(base, tmp_path/'run')
    (save/'latest_checkpoint'/'manifest.json').unlink()
    before = snapshot(save)
    r = run_cli(args(save, *([flag] if flag else []), epochs=2))
    one_line(r, 2, 'latest_checkpoint', 'no manifest.json', '--fresh')
    assert snapshot(save) == before

def _flip_last_byte(f: Path):
    b = bytearray(f.read_bytes()); b[-1] ^= 1; f.write_bytes(bytes(b))

def test_same_size_corruption_is_refused_naming_the_file(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    _flip_last_byte((save/'latest_checkpoint').resolve()/'model.safetensors')
    before = snapshot(save)
    one_line(run_cli(args(save, epochs=2)), 2, "'model.safetensors' differs from its sha256", '--fresh')
    one_line(run_cli(args(save, '--ckpt', str(save/'latest_checkpoint'), epochs=2)), 2, 'model.safetensors')
    assert snapshot(save) == before

def _as_format_1(ckpt: Path):
    "Rewrite a checkpoint's manifest as the code wrote it before format_version (sizes only)."
    man = json.loads((ckpt/'manifest.json').read_text())
    v1 = {'format': 1, 'files': man['files'], **{k: man[k] for k in ('epoch', 'step', 'seen', 'world_size', 'time')}}
    (ckpt/'manifest.json').write_text(json.dumps(v1, indent=2))

@pytest.mark.parametrize('fmt', [1, 2])
def test_invalid_train_state_of_the_same_size_is_one_line(base, tmp_path, fmt):
    save = copy_run(base, tmp_path/'run')
    ck = (save/'latest_checkpoint').resolve()
    if fmt == 1: _as_format_1(ck)
    f = ck/'train_state.json'; f.write_text(f.read_text().replace('}', ' '))
    before = snapshot(save)
    one_line(run_cli(args(save, '--resume-latest', epochs=2)), 2, 'train_state.json')
    assert snapshot(save) == before

def test_format_1_checkpoint_still_resumes_and_newer_is_refused(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    ck = (save/'latest_checkpoint').resolve()
    man2 = json.loads((ck/'manifest.json').read_text())
    (ck/'manifest.json').write_text(json.dumps({**man2, 'format_version': 99}))
    before = snapshot(save)
    one_line(run_cli(args(save, epochs=2)), 2, 'written by a newer terrain_diffusion', 'format_version 99')
    assert snapshot(save) == before
    _as_format_1(ck)
    r = run_cli(args(save, epochs=2)); assert r.returncode == 0, r.stderr
    new = json.loads((save/'latest_checkpoint'/'manifest.json').read_text())
    assert new['step'] == 8 and new['format_version'] == 2 and not ck.exists()   # the format-1 one was this folder's
    assert hidden(save) == []

def test_latest_linked_to_another_run_is_refused(base, tmp_path):
    other = copy_run(base, tmp_path/'other')
    save = copy_run(base, tmp_path/'run')
    (save/'latest_checkpoint').unlink()
    os.symlink((other/'latest_checkpoint').resolve(), save/'latest_checkpoint')
    before, before_other = snapshot(save), snapshot(other)
    one_line(run_cli(args(save, epochs=2)), 2, 'outside the save folder')
    assert snapshot(save) == before and snapshot(other) == before_other
    # --fresh keeps the link (moved aside) and never touches the other run
    r = run_cli(args(save, '--fresh', epochs=1)); assert r.returncode == 0, r.stderr
    assert snapshot(other) == before_other
    aside = next((save/'previous').iterdir())
    assert (aside/'latest_checkpoint').resolve() == (other/'latest_checkpoint').resolve()

def test_fresh_keeps_the_earlier_run(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    before = snapshot(save)
    r = run_cli(args(save, '--fresh', epochs=1, steps=3)); assert r.returncode == 0, r.stderr
    assert 'moved to' in r.stderr
    aside = next((save/'previous').iterdir())
    moved = snapshot(aside)
    assert before == moved                                                     # every file, unchanged
    assert json.loads((save/'latest_checkpoint'/'train_state.json').read_text())['step'] == 3

def test_leftovers_of_killed_writes_go_and_nothing_else(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    killed = save/'.latest_checkpoint.000000006.0badc0de'; killed.mkdir()
    (killed/'optimizer.bin').write_bytes(b'half'); (killed/'model_config').mkdir()
    link = save/'.latest_checkpoint.link.abc123'; os.symlink(killed.name, link)
    users = save/'.latest_checkpoint.000000007.0badc0de'; users.mkdir(); (users/'notes.txt').write_text('mine')
    r = run_cli(args(save, epochs=2)); assert r.returncode == 0, r.stderr
    assert not killed.exists() and not os.path.lexists(link) and (users/'notes.txt').read_text() == 'mine'

# --- model folders name registered models; nothing is imported because a file says so ------------------------------

def _tiny_export(d: Path) -> Path:
    from terrain_diffusion.registry import lookup, import_builtins
    import_builtins()
    m = lookup('model', 'unet')(in_channels=1, out_channels=1, image_size=8, model_channels=8, model_channel_mults=[1],
                                layers_per_block=1, midblock_attention=False, channels_per_head=8)
    m.save_pretrained(d)
    (d/'export.json').write_text(json.dumps({'kind': 'diffusion', 'sigma_data': 0.5, 'image_shape': [1, 8, 8],
                                             'cond_img_channels': 0, 'conditional_inputs': [], 'metres': None,
                                             'written_by': 'td_export', 'checkpoint': 'x', 'sigma_rel': 0.05, 'ema_sources': []}))
    return d

def test_config_naming_a_module_is_refused_and_nothing_imported(tmp_path):
    model = _tiny_export(tmp_path/'m')
    cfg = json.loads((model/'config.json').read_text())
    (model/'config.json').write_text(json.dumps({**cfg, '_registry_name': None, '_class': 'this.EDMUnet2D'}))
    before = snapshot(tmp_path)
    r = run_cli(['td_sample', str(model), '-n', '1', '--steps', '1', '-o', str(tmp_path/'s')])
    one_line(r, 2, 'names no registered model', "'this.EDMUnet2D' is not used")
    assert 'Beautiful is better than ugly' not in r.stdout + r.stderr
    assert snapshot(tmp_path) == before
    # with its registry name, the same file loads, and `_class` is still not imported
    (model/'config.json').write_text(json.dumps({**cfg, '_class': 'this.EDMUnet2D'}))
    r = run_cli(['td_sample', str(model), '-n', '1', '--steps', '1', '-o', str(tmp_path/'s')])
    assert r.returncode == 0 and 'Beautiful is better than ugly' not in r.stdout + r.stderr, r.stderr

# --- outputs replace only what their tool wrote ----------------------------------------------------------------------

def test_export_overwrite_refuses_a_run_folder_a_checkpoint_and_foreign_files(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    foreign = tmp_path/'script.py'; foreign.write_text('print(1)\n')
    mine = tmp_path/'mine'; mine.mkdir(); (mine/'config.json').write_text('{}')
    before = snapshot(tmp_path)
    for out in (save, save/'latest_checkpoint', foreign, mine):
        r = run_cli(['td_export', '-c', str(save/'latest_checkpoint'), '-s', '0.05', '-o', str(out), '--overwrite'])
        one_line(r, 2, 'is not a model folder written by td_export')
    assert snapshot(tmp_path) == before

def test_sample_out_replaces_only_its_own_samples(tmp_path):
    model = _tiny_export(tmp_path/'m')
    work = tmp_path/'work'; work.mkdir(); (work/'samples.npy').write_bytes(b'not mine'); (work/'notes.txt').write_text('x')
    before = snapshot(tmp_path)
    one_line(run_cli(['td_sample', str(model), '-n', '1', '--steps', '1', '-o', str(work)]), 2, 'is not a samples folder written by td_sample')
    assert snapshot(tmp_path) == before
    out = tmp_path/'s'
    for seed in (0, 1):          # its own folder is replaced
        r = run_cli(['td_sample', str(model), '-n', '1', '--steps', '1', '--seed', str(seed), '-o', str(out)]); assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ['samples.json', 'samples.npy', 'samples.png']
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []

def test_sample_bad_input_is_one_line(tmp_path):
    model = _tiny_export(tmp_path/'m')
    out = tmp_path/'s'
    one_line(run_cli(['td_sample', str(model), '--batch-size', '0', '-o', str(out)]), 2, '--batch-size 0')
    if not torch.cuda.is_available():
        one_line(run_cli(['td_sample', str(model), '--device', 'cuda', '-o', str(out)]), 2, '--device cuda', 'no CUDA device')
    info = json.loads((model/'export.json').read_text()); del info['image_shape']
    (model/'export.json').write_text(json.dumps(info))
    one_line(run_cli(['td_sample', str(model), '-o', str(out)]), 2, "has no 'image_shape'")
    assert not out.exists()

# --- signals and full disks -------------------------------------------------------------------------------------------

def _start(cmd_args, env=None):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', **(env or {})}
    e.pop('TD_DEBUG', None)
    return subprocess.Popen([str(Path(sys.executable).parent/cmd_args[0]), *cmd_args[1:]], env=e, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

def _wait_line(p, needle):
    for line in p.stderr:
        if needle in line: return line
    raise AssertionError(f'{needle!r} never printed')

def test_sigint_and_sigterm_during_start_up_are_one_line(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    before = snapshot(save)
    for sig, status, word in ((signal.SIGINT, 130, 'interrupted'), (signal.SIGTERM, 143, 'terminated (SIGTERM)')):
        p = _start(args(save, epochs=2), {'TD_FAULT_PAUSE': 'startup'})
        _wait_line(p, 'paused at start-up')
        p.send_signal(sig); err = p.stderr.read(); p.wait()
        lines = [l for l in err.splitlines() if l.strip()]
        assert p.returncode == status and len(lines) == 1 and word in lines[0] and 'start-up' in lines[0], err
    assert snapshot(save) == before

def test_disk_full_during_the_first_write_frees_it(tmp_path):
    save = tmp_path/'run'
    r = run_cli(args(save, '--progress', 'off'), env={'TD_FAULT_ENOSPC': 'trainer_files@1'})
    one_line(r, 1, 'No space left on device', 'the previous checkpoint is kept')
    assert not os.path.lexists(save/'latest_checkpoint') and hidden(save) == []

def test_disk_full_later_keeps_the_previous_checkpoint(base, tmp_path):
    save = copy_run(base, tmp_path/'run')
    ck = (save/'latest_checkpoint').resolve(); before = snapshot(ck)
    r = run_cli(args(save, '--resume-latest', '--progress', 'off', epochs=2), env={'TD_FAULT_ENOSPC': 'before_manifest@1'})
    one_line(r, 1, 'No space left on device')
    assert (save/'latest_checkpoint').resolve() == ck and snapshot(ck) == before and hidden(save) == []
    r = run_cli(args(save, epochs=2)); assert r.returncode == 0, r.stderr     # and the run goes on from it
    assert json.loads((save/'latest_checkpoint'/'train_state.json').read_text())['step'] == 8

def test_planted_pickle_with_a_consistent_manifest_is_not_run(base, tmp_path):
    "An attacker who also rewrites the size and SHA-256 gets past the hashes, not past the weights-only loader."
    from terrain_diffusion.training.checkpoint import file_sha256
    save = copy_run(base, tmp_path/'run')
    ck = (save/'latest_checkpoint').resolve(); marker = tmp_path/'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    torch.save({'state': Evil()}, ck/'phema.pt')
    man = json.loads((ck/'manifest.json').read_text())
    man['files']['phema.pt'], man['sha256']['phema.pt'] = (ck/'phema.pt').stat().st_size, file_sha256(ck/'phema.pt')
    (ck/'manifest.json').write_text(json.dumps(man))
    before = snapshot(save)
    one_line(run_cli(args(save, epochs=2)), 2, 'refusing to load', 'phema.pt')
    assert not marker.exists() and snapshot(save) == before

def test_debug_run_does_not_lock_or_touch_the_folder(tmp_path):
    save = tmp_path/'run'
    r = run_cli(args(save, '--debug-run')); assert r.returncode == 0, r.stderr
    assert not save.exists()
