#!/usr/bin/env python
"""Benchmark of the model family (not a test).

1. CPU time of one forward+backward (and forward-only, and one eval-mode torch.func.jvp as the
   consistency trainer uses it) of a quickstart-sized U-Net.
2. Parameter counts of the full-size configs, built on the `meta` device (no memory, no time),
   next to EDM2's published sizes where they exist.

    OMP_NUM_THREADS=1 python bench/bench_models.py [--reps 5] [--batch 8] [--size 64]
"""
import argparse, statistics, time
import torch
from terrain_diffusion.models.unet import EDMUnet2D
from terrain_diffusion.models.autoencoder import EDMAutoencoder
from terrain_diffusion.models.gan import MPGenerator, MPDiscriminator


def timed(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_quickstart(batch, size, reps):
    torch.manual_seed(0)
    net = EDMUnet2D(in_channels=5, out_channels=5, image_size=size, model_channels=32, model_channel_mults=[1, 2, 2],
                    layers_per_block=1, conditional_inputs=[('tensor', 58, 1.0)])
    with torch.no_grad(): net.out_gain.fill_(1.0)
    x, t, c = torch.randn(batch, 5, size, size), torch.rand(batch) * 1.5, [torch.randn(batch, 58)]

    def fwd_bwd():
        net.train(); net.zero_grad(set_to_none=True)
        out, lv = net(x, t, c, return_logvar=True)
        ((out.square() / lv.exp()) + lv).mean().backward()

    def fwd():
        net.train()
        with torch.no_grad(): net(x, t, c, return_logvar=True)

    def jvp_bwd():  # what one consistency-distillation step costs on the student
        net.eval(); net.zero_grad(set_to_none=True)
        f = lambda x, t: net(x, t, c, return_logvar=True)
        (out, lv), (dout, _) = torch.func.jvp(f, (x, t), (torch.randn_like(x), torch.ones_like(t)))
        ((out - dout.detach()).square().mean() + lv.mean()).backward()

    print(f"quickstart U-Net: 32 ch, mults [1,2,2], 1 layer/level, 5->5 ch, cond ('tensor', 58), {size}x{size}, batch {batch}; "
          f"{net.n_params() / 1e6:.3f} M params; torch threads {torch.get_num_threads()}")
    tf, tfb, tj = timed(fwd, reps), timed(fwd_bwd, reps), timed(jvp_bwd, reps)
    print(f"  forward (train mode, no grad): {tf * 1e3:8.1f} ms")
    print(f"  forward + backward:            {tfb * 1e3:8.1f} ms   ({batch / tfb:.1f} img/s)")
    print(f"  jvp + backward (eval):         {tj * 1e3:8.1f} ms   ({tj / tfb:.2f}x forward+backward)")


def count(cls, **kw):
    with torch.device('meta'): m = cls(**kw)
    return m.n_params()


def param_counts():
    base = dict(in_channels=5, out_channels=5, image_size=64, model_channels=192, model_channel_mults=[1, 2, 3, 4],
                layers_per_block=3, conditional_inputs=[('tensor', 58, 1.0)])
    edm2 = lambda ch: dict(in_channels=4, out_channels=4, image_size=64, model_channels=ch, model_channel_mults=[1, 2, 3, 4],
                           layers_per_block=3, attn_resolutions=[16, 8], noise_emb_dims=ch, fourier_scale=1.0,
                           conditional_inputs=[('embedding', 1000, 1.0)])
    rows = [
        ("base diffusion (192 ch, [1,2,3,4], 3 layers, 5->5, cond tensor 58, midblock attention only = reference layout)", EDMUnet2D, base, None),
        ("base diffusion, same + attn_resolutions [16, 8] at 64x64 (what the reference config intended)", EDMUnet2D, {**base, 'attn_resolutions': [16, 8]}, None),
        ("decoder diffusion (64 ch, [1,2,3,4], 3 layers, no attention, 5->1)", EDMUnet2D,
         dict(in_channels=5, out_channels=1, image_size=128, model_channels=64, model_channel_mults=[1, 2, 3, 4], layers_per_block=3,
              midblock_attention=False), None),
        ("autoguidance base guide (128 ch, else as base)", EDMUnet2D, {**base, 'model_channels': 128}, None),
        ("autoencoder (64 ch, [1,2,4,4], 2 layers, latent 4)", EDMAutoencoder, dict(), None),
        ("GAN generator (128 ch, [1,1], 2 layers, C_z 128, 5 out)", MPGenerator, dict(latent_channels=128, out_channels=5, model_channels=128), None),
        ("GAN discriminator (128 ch, [1,1], 2 layers, 5 in)", MPDiscriminator, dict(in_channels=5, model_channels=128, model_channel_mults=[1, 1], layers_per_block=2), None),
        ("EDM2-XS-like: 128 ch, 4->4, 1000 classes, attn [16,8], ImageNet-512 latents 64x64", EDMUnet2D, edm2(128), 125e6),
        ("EDM2-S-like:  192 ch, 4->4, 1000 classes, attn [16,8], ImageNet-512 latents 64x64", EDMUnet2D, edm2(192), 280e6),
        ("EDM2-M-like:  256 ch, 4->4, 1000 classes, attn [16,8], ImageNet-512 latents 64x64", EDMUnet2D, edm2(256), 498e6),
    ]
    print("\nparameter counts (M = 1e6)")
    for name, cls, kw, paper in rows:
        n = count(cls, **kw)
        ref = f"   EDM2 paper: {paper / 1e6:.0f} M (ratio {n / paper:.3f})" if paper else ""
        print(f"  {n / 1e6:9.2f} M  {name}{ref}")
    print("  (the EDM2 rows are a different config from ours: class-conditional ImageNet, 4 latent channels;"
          " they check that the architecture matches EDM2's)")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--size', type=int, default=64)
    a = ap.parse_args()
    bench_quickstart(a.batch, a.size, a.reps)
    param_counts()
