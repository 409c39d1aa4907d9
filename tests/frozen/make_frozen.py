"""Make the frozen checkpoints that tests/test_frozen_checkpoints.py loads: one tiny checkpoint per built-in trainer.

    python tests/frozen/make_frozen.py OUT_DIR [--only NAME ...]

Each trainer trains for one optimiser step (tiny models, a tiny synthetic store) and its checkpoint is copied to
OUT_DIR/<name>/checkpoint/ (a plain folder), with OUT_DIR/<name>/frozen.json saying how it was made. The consistency
trainer's teacher (a saved tiny U-Net) goes to OUT_DIR/consistency/teacher/. The checkpoints are written by the code
of the working tree the script runs in, in whatever format that code writes: a new checkpoint format gets its frozen
checkpoints in a new folder (e.g. tests/frozen/format_2) next to the old ones, which stay and must keep loading.
OUT_DIR must not exist or be empty; nothing else is written outside a temporary folder."""
import argparse, json, platform, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QS = ROOT/'configs'/'quickstart'
TRAINERS = ('toy', 'diffusion', 'consistency', 'autoencoder', 'gan')

def tiny_unet(path):
    "The smallest TrigFlow U-Net the trainers accept, saved with save_pretrained (the consistency trainer's teacher)."
    import torch
    from terrain_diffusion.models.unet import EDMUnet2D
    torch.manual_seed(0)
    net = EDMUnet2D(in_channels=1, out_channels=1, image_size=32, model_channels=4, model_channel_mults=(1,),
                    layers_per_block=1, channels_per_head=4, midblock_attention=False, logvar_channels=8)
    with torch.no_grad(): net.out_gain.fill_(1.0)
    net.save_pretrained(path)
    return path

def cases(store, teacher) -> dict:
    "name -> (config, overrides): the quickstart configs with the smallest models and one optimiser step."
    data = {'train_dataset.path': str(store), 'val_dataset.path': str(store)}
    unet = {'model.model_channels': 4, 'model.model_channel_mults': [1], 'model.layers_per_block': 1}
    return {
        'toy': (ROOT/'configs'/'examples'/'toy.cfg', {'model.width': 4}),
        'diffusion': (QS/'terrain.cfg', {**data, **unet, 'training.batch_size': 2}),
        'consistency': (QS/'consistency_terrain.cfg', {**data, 'model.main_path': str(teacher), 'training.batch_size': 2}),
        'autoencoder': (QS/'autoencoder.yaml', {**data, 'model.model_channels': 4, 'model.model_channel_mults': [1, 1, 1, 1],
                                                'training.batch_size': 2}),
        'gan': (QS/'gan.cfg', {**data, 'generator.model_channels': 4, 'discriminator.model_channels': 4,
                               'training.batch_size': 2}),
    }

def make(name, config, overrides, work:Path, out:Path):
    from terrain_diffusion.training.train import TrainingRun
    run = TrainingRun(config, {**overrides, 'logging.save_dir': str(work/name), 'training.epochs': 1, 'training.epoch_steps': 1,
                               'logging.temp_save_epochs': 1, 'logging.save_epochs': 0, 'logging.samples_every_epochs': 0,
                               'evaluation.validate_epochs': 0, 'wandb.mode': 'disabled', 'ema.checkpoint_every_num_steps': 1000},
                      progress='off', resume='fresh')
    try: run.fit()
    finally: run.close()
    ck = (work/name/'latest_checkpoint').resolve()
    shutil.copytree(ck, out/name/'checkpoint')
    man = json.loads((ck/'manifest.json').read_text())
    import torch
    info = {'trainer': name, 'format': man.get('format_version', man.get('format')), 'step': man['step'],
            'made_with': {'terrain_diffusion': _git_rev(), 'torch': torch.__version__, 'python': platform.python_version()},
            'overrides': {k: v for k, v in overrides.items() if not k.endswith('.path')}}
    (out/name/'frozen.json').write_text(json.dumps(info, indent=2) + '\n')
    size = sum(p.stat().st_size for p in (out/name).rglob('*') if p.is_file())
    print(f"{name}: {out/name} ({size / 1024:.0f} KiB)")

def _git_rev() -> str:
    r = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() or 'unknown'

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out', help='output folder (must not exist, or be empty)')
    p.add_argument('--only', nargs='+', choices=TRAINERS, help='only these trainers')
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"make_frozen.py: error: '{out}' exists and is not an empty folder", file=sys.stderr); sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='td_frozen_') as tmp:
        work = Path(tmp)
        store = work/'store.h5'
        td_data = Path(sys.executable).parent/'td_data'
        subprocess.run([str(td_data), 'build', '--source', 'synthetic', '--n-maps', '2', '--map-size', '256', '--tile-size', '128',
                        '--val-fraction', '0.3', '--out', str(store), '--no-progress'], check=True)
        names = a.only or TRAINERS
        teacher = tiny_unet(out/'consistency'/'teacher') if 'consistency' in names else None
        for name, (cfg, ov) in cases(store, teacher).items():
            if name in names: make(name, cfg, ov, work, out)

if __name__ == '__main__': main()
