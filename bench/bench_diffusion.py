"""Diffusion trainer costs, measured side by side in one run (the quickstart-sized elevation model of
configs/quickstart/terrain.cfg, batch 16 of 1x32x32, on CPU):

(a) one optimiser step through the loop (`TrainingRun.fit`: data stream, accelerate, logging, the trainer's
    `train_step`) vs the same math in a bare PyTorch loop (same architecture and seed: TrigFlow loss, backward, clip,
    Adam, EMA update), (a1) on one fixed batch and (a2) with each batch drawn from the loop's seeded stream
    (`make_loader`, the same data path as the loop). Blocks of steps alternate between the three so that machine load
    hits all alike; medians of the per-block step times. Budget: ratio <= 1.03.
(b) `PostHocEMA.update()` (two profiles) as a share of a bare training step. Budget: <= 2 %.
(c) 32-step DPM-Solver++(2M) sampling of 16 terrains (32 network evaluations), seconds and per step.

    OMP_NUM_THREADS=2 python bench/bench_diffusion.py            # a store is built in a temporary folder
"""
import argparse, statistics, tempfile, time
from pathlib import Path

import torch

from terrain_diffusion.data.dem_io import sample_dem
from terrain_diffusion.data.store import build_store
from terrain_diffusion.models.sampling import sample_diffusion
from terrain_diffusion.trainers.common import build_optimizer, set_lr
from terrain_diffusion.trainers.diffusion import trigflow_loss, sample_times
from terrain_diffusion.training.ema import PostHocEMA
from terrain_diffusion.training.train import TrainingRun
from terrain_diffusion.training.stream import make_loader
from terrain_diffusion.models.unet import EDMUnet2D

CFG = Path(__file__).resolve().parents[1]/'configs'/'quickstart'/'terrain.cfg'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--block', type=int, default=10, help='steps per timed block')
    ap.add_argument('--reps', type=int, default=9, help='blocks per side')
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    store = build_store(Path(tmp.name)/'q.h5', [sample_dem('jacksboro')], tile_size=64, stride=16, progress=False)
    over = {'train_dataset.path': str(store), 'val_dataset.path': str(store), 'training.epoch_steps': args.block,
            'evaluation.validate_epochs': 0, 'logging.temp_save_epochs': 0, 'logging.samples_every_epochs': 0,
            'training.log_every_steps': 1000, 'ema.checkpoint_every_num_steps': None}
    run = TrainingRun(CFG, over, debug_run=True, progress='off')
    tr = run.trainer
    B = run.config['training']['batch_size']

    # the bare loop: same architecture, seed, optimizer, clip, lr schedule and EMA; one fixed batch
    torch.manual_seed(0)
    mcfg = {k: v for k, v in run.config['model'].items() if not k.startswith('@')}
    model = EDMUnet2D(**mcfg).train()
    opt = build_optimizer(model.parameters(), dict(run.config['optimizer']))
    ema = PostHocEMA(model, sigma_rels=(0.05, 0.1))
    sched, clip, seen = tr.lr_sched, run.config['training']['max_grad_norm'], 0
    x0 = torch.stack([tr.train_data[i]['image'] for i in range(B)])

    stream = iter(make_loader(tr.train_data, B, seed=1))

    def bare_step(batch=None):
        nonlocal seen
        x = x0 if batch is None else batch['image']
        t = sample_times(B); z = 0.5 * torch.randn_like(x)
        loss, _ = trigflow_loss(model, x, t, z)
        loss.backward()
        set_lr(opt, sched(seen))
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step(); opt.zero_grad(set_to_none=True)
        ema.update(); seen += B
        return loss.item()

    def timed(f):
        t0 = time.perf_counter(); f(); return (time.perf_counter() - t0) / args.block

    for _ in range(3): bare_step(); bare_step(next(stream))          # warm-up all sides
    run.fit(epochs=1)
    loop_t, bare_t, stream_t, data_t = [], [], [], []
    for _ in range(args.reps):
        loop_t.append(timed(lambda: run.fit(epochs=1)))
        bare_t.append(timed(lambda: [bare_step() for _ in range(args.block)]))
        stream_t.append(timed(lambda: [bare_step(next(stream)) for _ in range(args.block)]))
        data_t.append(timed(lambda: [next(stream) for _ in range(args.block)]))
    lm, bm, sm, dm = (statistics.median(v) for v in (loop_t, bare_t, stream_t, data_t))
    print(f"(a1) step through the loop {lm * 1e3:.1f} ms, bare PyTorch on a fixed batch {bm * 1e3:.1f} ms: ratio {lm / bm:.3f} (budget <= 1.03)")
    print(f"(a2) bare PyTorch with batches from the seeded stream {sm * 1e3:.1f} ms: loop / bare ratio {lm / sm:.3f}; "
          f"drawing one batch of {B} alone takes {dm * 1e3:.1f} ms")
    print(f"     per-block ratios (a1) {[round(a / b, 3) for a, b in zip(loop_t, bare_t)]}, (a2) {[round(a / b, 3) for a, b in zip(loop_t, stream_t)]}")

    # (b) EMA update share, interleaved with bare steps
    ups, steps = [], []
    for _ in range(args.reps * 4):
        t0 = time.perf_counter(); bare_step(); steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); ema.update(); ups.append(time.perf_counter() - t0)
    u, s = statistics.median(ups), statistics.median(steps)
    print(f"(b) EMA update (2 profiles, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) {u * 1e3:.2f} ms "
          f"= {100 * u / s:.2f} % of a training step of {s * 1e3:.1f} ms (budget <= 2 %)")

    # (c) 32-step sampling
    model.eval()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        sample_diffusion(model, (16, *x0.shape[1:]), steps=32, generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - t0)
    c = statistics.median(times)
    print(f"(c) 32-step DPM-Solver++(2M) sampling of 16 terrains {c:.2f} s ({c / 32 * 1e3:.1f} ms per step); "
          f"one training step {s * 1e3:.1f} ms")
    run.close(); tmp.cleanup()


if __name__ == '__main__':
    main()
