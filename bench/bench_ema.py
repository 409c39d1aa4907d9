"""Cost of `PostHocEMA.update()` next to one training step, measured side by side in one run.

A plain ~2.5M-parameter conv encoder-decoder, batch 8 of 3x64x64 on CPU; one training step is
forward + MSE loss + backward + Adam step. Each repetition times, in turn: a training step, the fused
`update()` of a two-profile EMA, and a naive per-parameter Python loop doing the same arithmetic (a
second EMA object, so both track the same weights). Medians are reported. Also reported: one snapshot
write (both profiles, float16 safetensors) amortised over `--every` steps, one synthesis, and fused
vs naive on a model of 400 small parameter tensors (where per-tensor Python overhead dominates).

    OMP_NUM_THREADS=1 python bench/bench_ema.py            # budget: update <= 2% of a training step
"""
import argparse, statistics, tempfile, time

import torch
from torch import nn

from terrain_diffusion.training.ema import PostHocEMA, power_function_beta


def make_cnn(ch: int = 64) -> nn.Module:
    "Encoder-decoder CNN, about 2.5M parameters for ch=64."
    act = nn.SiLU
    return nn.Sequential(
        nn.Conv2d(3, ch, 3, padding=1), act(),
        nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), act(),
        nn.Conv2d(2 * ch, 4 * ch, 3, stride=2, padding=1), act(),
        nn.Conv2d(4 * ch, 4 * ch, 3, padding=1), nn.GroupNorm(8, 4 * ch), act(),
        nn.Conv2d(4 * ch, 4 * ch, 3, padding=1), nn.GroupNorm(8, 4 * ch), act(),
        nn.Conv2d(4 * ch, 4 * ch, 3, padding=1), act(),
        nn.Upsample(scale_factor=2), nn.Conv2d(4 * ch, 2 * ch, 3, padding=1), act(),
        nn.Upsample(scale_factor=2), nn.Conv2d(2 * ch, ch, 3, padding=1), act(),
        nn.Conv2d(ch, 3, 3, padding=1))


@torch.no_grad()
def naive_update(ema: PostHocEMA):
    "The same update as `PostHocEMA.update`, one parameter at a time (what a per-parameter loop costs)."
    ema.step += 1
    params = dict(ema.model.named_parameters())
    for g, e in zip(ema.gammas, ema.ema):
        w = 1.0 - power_function_beta(ema.step, g)
        for n, v in e.items(): v.lerp_(params[n].detach(), w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--res', type=int, default=64)
    ap.add_argument('--ch', type=int, default=64)
    ap.add_argument('--every', type=int, default=2048, help='checkpoint_every_num_steps used to amortise a snapshot')
    ap.add_argument('--budget', type=float, default=0.02)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = make_cnn(a.ch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(a.batch, 3, a.res, a.res); y = torch.randn_like(x)
    fused, naive = PostHocEMA(model, (0.05, 0.10)), PostHocEMA(model, (0.05, 0.10))
    fused.update(); naive.update()  # the first update is a copy; time the steady state

    def train_step():
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    def timed(f):
        t0 = time.perf_counter(); f(); return time.perf_counter() - t0

    t_train, t_fused, t_naive = [], [], []
    for r in range(a.warmup + a.reps):
        tt, tf, tn = timed(train_step), timed(fused.update), timed(lambda: naive_update(naive))
        if r >= a.warmup: t_train.append(tt); t_fused.append(tf); t_naive.append(tn)
    for k in fused.names:  # both EMAs must hold the same numbers
        torch.testing.assert_close(fused.ema[1][k], naive.ema[1][k], rtol=1e-5, atol=1e-6)

    with tempfile.TemporaryDirectory() as d:
        snap = PostHocEMA(model, (0.05, 0.10), checkpoint_every_num_steps=a.every, checkpoint_folder=d)
        snap.step = a.every
        t_snap = statistics.median(timed(snap.save_snapshots) for _ in range(3))
        for s in range(2, 11): snap.step = s * a.every; snap.save_snapshots()
        t_synth = timed(lambda: snap.synthesize(0.13))

    med = statistics.median
    n_params = sum(p.numel() for p in model.parameters())
    tr, fu, na = med(t_train), med(t_fused), med(t_naive)
    print(f"model: {n_params / 1e6:.2f}M params, batch {a.batch}x3x{a.res}x{a.res}, torch threads {torch.get_num_threads()}, "
          f"{len(fused.names)} parameter tensors, 2 profiles, {a.reps} reps")
    print(f"train step (fwd+bwd+Adam)  {tr * 1e3:9.2f} ms")
    print(f"update() fused foreach     {fu * 1e3:9.3f} ms   = {fu / tr:.3%} of a train step")
    print(f"update naive per-param     {na * 1e3:9.3f} ms   = {na / tr:.3%} of a train step  (fused is {na / fu:.2f}x faster)")
    print(f"snapshot write (2 x fp16)  {t_snap * 1e3:9.2f} ms   = {t_snap / a.every / tr:.4%} of a train step amortised over {a.every} steps")
    print(f"synthesize from 20 files   {t_synth * 1e3:9.2f} ms")
    # per-tensor overhead: a U-Net has hundreds of parameter tensors, many small
    many = nn.Sequential(*[nn.Linear(64, 64) for _ in range(200)])  # 400 tensors, 0.83M params
    mf, mn = PostHocEMA(many, (0.05, 0.10)), PostHocEMA(many, (0.05, 0.10))
    mf.update(); mn.update()
    m_f = med([timed(mf.update) for _ in range(a.reps)]); m_n = med([timed(lambda: naive_update(mn)) for _ in range(a.reps)])
    print(f"400 small tensors (0.83M): fused {m_f * 1e3:.3f} ms, naive {m_n * 1e3:.3f} ms (fused is {m_n / m_f:.2f}x faster)")
    ok = fu / tr <= a.budget
    print(f"budget update <= {a.budget:.0%} of a train step: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
