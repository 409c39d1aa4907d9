"""Training throughput of the full-size U-Nets, and the loop against a bare loop, side by side in one run.

(a) For the base U-Net (configs/diffusion_base/diffusion_192-3.cfg) and the decoder U-Net
    (configs/diffusion_decoder/diffusion_decoder_64-3.cfg) at their configured sizes: one training step (TrigFlow loss,
    forward and backward through the uncertainty-weighted loss, Adam step) in several variants -- fp32, bf16 autocast,
    channels-last, torch.compile (and combinations). Printed per variant: images per second, achieved TFLOP/s (the
    floating-point operations of one forward+backward are counted once with `torch.utils.flop_counter.FlopCounterMode`,
    which counts matrix multiplications and convolutions, i.e. essentially all of a U-Net's work) and, on a GPU, the
    model FLOP utilisation (MFU) against the device's dense bf16 peak.
(b) One optimiser step of the base U-Net through the loop (`TrainingRun.fit` with the diffusion trainer, on random
    in-memory data) against the same math in a bare PyTorch loop, same device, model, batch and precision; blocks of
    steps alternate between the two sides so that machine load hits both alike; medians of per-block step times.

    python bench/bench_throughput.py                        # GPU when present; on CPU a small batch and no compile
    python bench/bench_throughput.py --only decoder --variants fp32,bf16 --batch 2
    python bench/bench_throughput.py --peak-tflops 989      # MFU against a stated peak (TFLOP/s) for unknown devices

Targets on a GPU: >= 40 % MFU in bf16 for the 192-channel base U-Net; loop / bare <= 1.03.
On CPU the figures say what a CPU can do and that the script runs; MFU is not defined there.
"""
import argparse, contextlib, statistics, time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from terrain_diffusion.config import load_config
from terrain_diffusion.models.unet import EDMUnet2D
from terrain_diffusion.registry import registry
from terrain_diffusion.trainers.common import build_optimizer
from terrain_diffusion.trainers.diffusion import trigflow_loss, sample_times

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {'base': ROOT/'configs'/'diffusion_base'/'diffusion_192-3.cfg',
           'decoder': ROOT/'configs'/'diffusion_decoder'/'diffusion_decoder_64-3.cfg'}

# dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets; SXM parts where a PCIe part differs)
PEAK_BF16 = {'H200': 989.0, 'H100 PCIe': 756.0, 'H100': 989.0, 'A100': 312.0, 'L40S': 362.0, 'L4': 121.0,
             'A10G': 70.0, 'A10': 125.0, 'RTX 4090': 165.0, 'RTX 3090': 71.0, 'V100': 125.0}


def device_peak(device:torch.device, override:float|None) -> float|None:
    "The device's dense bf16 peak in TFLOP/s, or None (CPU, or a GPU not in the table and no --peak-tflops)."
    if override: return override
    if device.type != 'cuda': return None
    name = torch.cuda.get_device_name(device)
    for k in sorted(PEAK_BF16, key=len, reverse=True):
        if k in name: return PEAK_BF16[k]
    return None


def model_parts(cfg_path:Path):
    "The config's [model] keyword arguments and the number of generated (out) and conditioning-image channels."
    cfg = load_config(cfg_path)
    kw = {k: v for k, v in dict(cfg['model']).items() if not k.startswith('@')}
    return cfg, kw, int(kw['out_channels']), int(kw['in_channels']) - int(kw['out_channels'])


def make_batch(kw, B, device, channels_last=False):
    C, S = int(kw['out_channels']), int(kw['image_size'])
    x0 = 0.5 * torch.randn(B, C, S, S, device=device)
    ci = int(kw['in_channels']) - C
    cond = torch.randn(B, ci, S, S, device=device) if ci else None
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
        cond = cond.contiguous(memory_format=torch.channels_last) if cond is not None else None
    return x0, cond


def autocast(device, bf16:bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def step_fn(net, opt, device, bf16):
    "One bare training step on a given batch: TrigFlow loss with the log-variance weighting, backward, Adam."
    def step(x0, cond):
        t = sample_times(x0.shape[0], device=device)
        z = 0.5 * torch.randn_like(x0)
        with autocast(device, bf16):
            loss, _ = trigflow_loss(net, x0, t, z, cond)
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    return step


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def count_flops(net, x0, cond, device, bf16) -> int:
    "FLOPs of one forward + backward of the loss (FlopCounterMode counts matmuls and convolutions)."
    t = sample_times(x0.shape[0], device=device); z = 0.5 * torch.randn_like(x0)
    with FlopCounterMode(display=False) as fc:
        with autocast(device, bf16):
            loss, _ = trigflow_loss(net, x0, t, z, cond)
        loss.backward()
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def bench_variant(name, kw, B, device, variant:set, iters, warmup, peak):
    torch.manual_seed(0)
    net = EDMUnet2D(**kw).to(device).train()
    cl, bf16, comp = 'channels_last' in variant, 'bf16' in variant, 'compile' in variant
    if cl: net = net.to(memory_format=torch.channels_last)
    x0, cond = make_batch(kw, B, device, cl)
    flops = count_flops(net, x0, cond, device, bf16)
    fwd = torch.compile(net) if comp else net
    opt = build_optimizer(net.parameters(), {'type': 'adam', 'lr': 1e-4, 'betas': [0.9, 0.99]})
    step = step_fn(fwd, opt, device, bf16)
    t0 = time.perf_counter()
    for _ in range(warmup): step(x0, cond)
    sync(device); warm = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        t0 = time.perf_counter(); step(x0, cond); sync(device); times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    tflops = flops / s / 1e12
    mfu = f"{100 * tflops / peak:5.1f} %" if peak else '   n/a'
    label = '+'.join(sorted(variant)) or 'fp32'
    print(f"  {name:7s} {label:28s} {B / s:9.2f} img/s  {s * 1e3:9.1f} ms/step  {tflops:8.3f} TFLOP/s  MFU {mfu}"
          f"  ({flops / B / 1e9:.1f} GFLOP per image fwd+bwd; warm-up {warm:.1f} s)", flush=True)
    del net, opt, fwd
    if device.type == 'cuda': torch.cuda.empty_cache()
    return B / s


class RandomImages(torch.utils.data.Dataset):
    "Random items of the model's shape: the data side costs nothing, so (b) measures the loop alone."
    def __init__(self, channels:int, size:int, cond_channels:int=0, n:int=256):
        g = torch.Generator().manual_seed(0)
        self.x = 0.5 * torch.randn(n, channels, size, size, generator=g)
        self.c = torch.randn(n, cond_channels, size, size, generator=g) if cond_channels else None
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        return {'image': self.x[i]} if self.c is None else {'image': self.x[i], 'cond_img': self.c[i]}


def loop_vs_bare(kw, B, device, bf16, block, reps):
    from terrain_diffusion.training.train import TrainingRun
    C, ci, S = int(kw['out_channels']), int(kw['in_channels']) - int(kw['out_channels']), int(kw['image_size'])
    try: registry.dataset.register('bench_random_images')(lambda: RandomImages(C, S, ci))
    except Exception: pass
    cfg, *_ = model_parts(CONFIGS['base'])
    cfg = dict(cfg)
    cfg['model'] = {'@model': 'unet', **kw}
    cfg['train_dataset'] = {'@dataset': 'bench_random_images'}
    cfg.pop('val_dataset', None)
    over = {'training.batch_size': B, 'training.epoch_steps': block, 'training.mixed_precision': 'bf16' if bf16 else 'no',
            'training.log_every_steps': 10 ** 6, 'evaluation.validate_epochs': 0, 'logging.temp_save_epochs': 0,
            'logging.save_epochs': 0, 'logging.samples_every_epochs': 0, 'ema.checkpoint_every_num_steps': None,
            'wandb.mode': 'disabled', 'dataloader_kwargs.num_workers': 0}
    for k, v in over.items():
        sec, key = k.split('.', 1); cfg.setdefault(sec, {}); cfg[sec] = {**dict(cfg[sec]), key: v}
    run = TrainingRun(cfg, debug_run=True, progress='off')
    torch.manual_seed(0)
    net = EDMUnet2D(**kw).to(device).train()
    opt = build_optimizer(net.parameters(), {'type': 'adam', 'lr': 1e-4, 'betas': [0.9, 0.99]})
    bare = step_fn(net, opt, device, bf16)
    data = RandomImages(C, S, ci)
    x0 = data.x[:B].to(device); cond = data.c[:B].to(device) if data.c is not None else None
    def timed(f):
        sync(device); t0 = time.perf_counter(); f(); sync(device); return (time.perf_counter() - t0) / block
    run.fit(epochs=1); [bare(x0, cond) for _ in range(2)]               # warm-up both sides
    lt, bt = [], []
    for _ in range(reps):
        lt.append(timed(lambda: run.fit(epochs=1)))
        bt.append(timed(lambda: [bare(x0, cond) for _ in range(block)]))
    lm, bm = statistics.median(lt), statistics.median(bt)
    print(f"(b) base U-Net, batch {B}, {'bf16' if bf16 else 'fp32'}: step through the loop {lm * 1e3:.1f} ms, bare PyTorch "
          f"{bm * 1e3:.1f} ms: ratio {lm / bm:.3f} (target <= 1.03); per-block {[round(a / b, 3) for a, b in zip(lt, bt)]}")
    run.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', choices=['base', 'decoder'], help='one model instead of both')
    ap.add_argument('--batch', type=int, help='batch size (default: the config\'s on a GPU, 2 on CPU)')
    ap.add_argument('--variants', help='comma-separated list of variants, each a +-joined set of fp32/bf16/channels_last/'
                    'compile (default: fp32,bf16,bf16+channels_last and, on a GPU, bf16+channels_last+compile)')
    ap.add_argument('--iters', type=int, help='timed steps per variant (default 20 on a GPU, 3 on CPU)')
    ap.add_argument('--warmup', type=int, help='untimed steps first (default 5 on a GPU, 1 on CPU)')
    ap.add_argument('--peak-tflops', type=float, help='the device\'s peak bf16 TFLOP/s, for MFU on devices not in the table')
    ap.add_argument('--skip-loop', action='store_true', help='skip (b), the loop against a bare loop')
    ap.add_argument('--loop-block', type=int, help='steps per timed block in (b) (default 10 on a GPU, 2 on CPU)')
    ap.add_argument('--loop-reps', type=int, help='blocks per side in (b) (default 5 on a GPU, 3 on CPU)')
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device('cuda' if gpu else 'cpu')
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    peak = device_peak(device, args.peak_tflops)
    variants = args.variants or ('fp32,bf16,bf16+channels_last,bf16+channels_last+compile' if gpu else 'fp32,bf16,bf16+channels_last')
    variants = [set() if v == 'fp32' else set(v.split('+')) - {'fp32'} for v in variants.split(',')]
    iters, warmup = args.iters or (20 if gpu else 3), args.warmup or (5 if gpu else 1)
    dev_name = torch.cuda.get_device_name(device) if gpu else f'CPU, {torch.get_num_threads()} threads'
    print(f"device: {dev_name}; torch {torch.__version__}; bf16 peak {peak or 'unknown'} TFLOP/s")
    print("(a) one training step (TrigFlow loss fwd+bwd, Adam):")
    for name in ([args.only] if args.only else ['base', 'decoder']):
        cfg, kw, C, ci = model_parts(CONFIGS[name])
        B = args.batch or (int(cfg['training']['batch_size']) if gpu else 2)
        n = sum(p.numel() for p in EDMUnet2D(**kw).parameters())
        print(f"  {name}: {CONFIGS[name].relative_to(ROOT)}, {n / 1e6:.1f} M parameters, batch {B} of "
              f"{C}(+{ci} cond) x {kw['image_size']}^2")
        for v in variants: bench_variant(name, kw, B, device, v, iters, warmup, peak)
    if not args.skip_loop:
        cfg, kw, *_ = model_parts(CONFIGS['base'])
        B = args.batch or (int(cfg['training']['batch_size']) if gpu else 2)
        loop_vs_bare(kw, B, device, bf16=True, block=args.loop_block or (10 if gpu else 2), reps=args.loop_reps or (5 if gpu else 3))


if __name__ == '__main__':
    main()
