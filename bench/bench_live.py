"""Cost of the live view: an epoch of the toy trainer with and without `LiveView`, side by side in one run.

The toy trainer made a little bigger (width 32, 32x32 fields, batch 16, 100 steps an epoch, logging every
10 steps, validation every epoch, no checkpoints) so that an epoch takes a few seconds on a CPU. Each
repetition trains one fresh epoch per arm, in rotating order: no view; no view again (an A/A control:
its ratio shows the noise of the measurement on this machine); the view in PNG mode (what a script
gets); the view in widget mode (what a notebook gets; built headless, the PNG bytes are rendered exactly
as in a notebook). The view uses its default refresh rule unless `--every-steps` is given.
Reported per arm: median epoch wall time; the median over repetitions of the ratio to the no-view epoch
of the same repetition, in wall time and in process CPU time (steadier on a shared machine); the share
of the epoch spent inside the callback (its own clock); the cost of a picture, side by side: the first
picture of each view (imports, font caches, the sampler's first call: left out of the view's budget)
and the later, steady-state ones (what the budget is applied to); the pictures drawn.

    OMP_NUM_THREADS=1 python bench/bench_live.py                      # budget: ratio <= 1.05
    OMP_NUM_THREADS=1 python bench/bench_live.py --steps 400 --reps 3  # the default cadence in a longer epoch
    OMP_NUM_THREADS=1 python bench/bench_live.py --every-steps 10 --reps 3   # a picture at every logging event
    OMP_NUM_THREADS=1 python bench/bench_live.py --quickstart            # picture cost of the quickstart's main job

`--quickstart` instead builds the quickstart's tile store (in a temporary folder), trains its config
(configs/quickstart/terrain.cfg) for 20 steps, then draws the widget's picture (8 samples, as the
quickstart notebook shows) `--reps` times in a fresh view: the first picture's cost beside the
steady-state ones, and how a picture splits into sampling and drawing.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import argparse, statistics, sys, tempfile, time
from pathlib import Path

import torch

from terrain_diffusion.training.train import TrainingRun
from terrain_diffusion.eval.live import LiveView

CFG = Path(__file__).resolve().parents[1]/'configs'/'examples'/'toy.cfg'


def one_epoch(tmp: Path, name: str, mode: str | None, args, steps: int):
    "Train one epoch of a fresh toy run with a view in `mode` (None: no view); (seconds, view)."
    view = None if mode is None else LiveView(mode=mode, every_steps=args.every_steps)
    run = TrainingRun(CFG, {'logging.save_dir': str(tmp/name), 'training.epochs': 1, 'training.epoch_steps': steps,
                            'training.batch_size': args.batch, 'training.log_every_steps': 10, 'model.width': args.width,
                            'train_dataset.size': args.size, 'logging.temp_save_epochs': 0, 'evaluation.validate_epochs': 1},
                      progress='off', callbacks=[] if view is None else [view])
    c0, t0 = time.process_time(), time.perf_counter()
    run.fit()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    run.close()
    return dt, dc, view


def quickstart(args):
    "Picture costs of the quickstart's main job: first vs steady state, sampling vs drawing."
    from terrain_diffusion.data.dem_io import sample_dem
    from terrain_diffusion.data.store import build_store
    with tempfile.TemporaryDirectory() as d:
        store = build_store(Path(d)/'q.h5', [sample_dem()], tile_size=64, stride=16, progress=False)
        cfg = CFG.parents[1]/'quickstart'/'terrain.cfg'
        run = TrainingRun(cfg, {'train_dataset.path': str(store), 'val_dataset.path': str(store), 'logging.save_dir': f'{d}/run',
                                'training.epochs': 1, 'training.epoch_steps': 20, 'logging.temp_save_epochs': 0,
                                'logging.samples_every_epochs': 0, 'evaluation.validate_epochs': 0}, progress='off')
        t0 = time.perf_counter(); run.fit(); train = time.perf_counter() - t0
        view = LiveView(mode='widget', n_samples=8).bind(run)
        sample_s = []
        def timed_sample(r, _s=view._sample):
            t = time.perf_counter(); x = _s(r); sample_s.append(time.perf_counter() - t); return x
        view._sample = timed_sample
        for _ in range(max(args.reps, 2)): view.refresh(run)
        run.close()
    c, s = view.costs, sample_s
    print(f"quickstart main job (configs/quickstart/terrain.cfg): {train / 20:.3f} s a training step; "
          f"a picture = 8 samples ({run.config['evaluation']['sample_steps']} sampler steps) + grid + loss plot")
    print(f"first picture {c[0]:.3f} s (sampling {s[0]:.3f} s); steady state median {statistics.median(c[1:]):.3f} s "
          f"(sampling {statistics.median(s[1:]):.3f} s, drawing {statistics.median(c[1:]) - statistics.median(s[1:]):.3f} s) "
          f"over {len(c) - 1} pictures; at the 5% budget: one picture per {statistics.median(c[1:]) / 0.05:.0f} s of training")
    return 0

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=9)
    p.add_argument('--steps', type=int, default=100, help='steps per epoch')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--width', type=int, default=32)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--every-steps', type=int, default=None, help='fixed refresh interval (default: the view\'s time budget)')
    p.add_argument('--budget', type=float, default=1.05)
    p.add_argument('--quickstart', action='store_true', help="picture cost of the quickstart's main job instead")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
    if args.quickstart: return quickstart(args)
    arms = {'none': None, 'none A/A': None, 'png': 'png', 'widget': 'widget'}
    times, cpus, shares, pics, costs, firsts = ({a: [] for a in arms} for _ in range(6))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for a, m in arms.items(): one_epoch(tmp, f'warm_{a}', m, args, 20)      # imports, font cache, allocator
        names = list(arms)
        for r in range(args.reps):
            order = names[r % len(names):] + names[:r % len(names)]
            for a in order:
                dt, dc, view = one_epoch(tmp, f'{a}_{r}'.replace(' ', '_').replace('/', ''), arms[a], args, args.steps)
                times[a].append(dt); cpus[a].append(dc)
                if view is not None:
                    shares[a].append(view.seconds / dt); pics[a].append(view.refreshes)
                    firsts[a] += view.costs[:1]; costs[a] += view.costs[1:]
    base, cbase = times['none'], cpus['none']
    print(f"toy epoch: {args.steps} steps, batch {args.batch}, width {args.width}, {args.size}x{args.size}; "
          f"{args.reps} repetitions; refresh: {'every %d steps' % args.every_steps if args.every_steps else 'default time budget (5%)'}")
    print(f"{'arm':9s} {'epoch s':>8s} {'wall ratio':>11s} {'wall range':>14s} {'cpu ratio':>10s} {'callback':>9s} "
          f"{'first s':>8s} {'steady s':>9s}  pictures at steps (first repetitions)")
    ok = True
    for a in arms:
        ratios = [t / b for t, b in zip(times[a], base)]
        med, cmed = statistics.median(ratios), statistics.median([c / b for c, b in zip(cpus[a], cbase)])
        if arms[a] is not None: ok &= cmed <= args.budget
        share = f"{100 * statistics.median(shares[a]):.2f}%" if shares[a] else '-'
        cost = f"{statistics.median(costs[a]):.3f}" if costs[a] else '-'
        first = f"{statistics.median(firsts[a]):.3f}" if firsts[a] else '-'
        print(f"{a:9s} {statistics.median(times[a]):8.3f} {med:11.4f} {min(ratios):6.3f}..{max(ratios):6.3f} {cmed:10.4f} "
              f"{share:>9s} {first:>8s} {cost:>9s}  {pics[a][:3] if pics[a] else ''}")
    print(f"budget: median CPU-time ratio <= {args.budget}: {'OK' if ok else 'OVER'} "
          f"(wall-time ratios are shown beside it; the A/A row is their noise on this machine)")
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
