"""Cost of one sCM consistency-distillation step vs one TrigFlow diffusion step, and of 2-step consistency sampling
vs 32-step diffusion sampling, on the same U-Net and batch (the budget: distillation step <= 3x diffusion step).

    OMP_NUM_THREADS=1 python bench/bench_consistency.py [--channels 32 --size 32 --batch 8 --repeats 5]

The diffusion step is forward + backward of the TrigFlow loss (nbs/trainers/30_diffusion.ipynb, "Loss") with the model in train mode, then an
Adam step. The distillation step is `scm_loss` (teacher forward + student JVP) + backward + Adam step + norm_weights,
every model in eval mode, as in `ConsistencyTrainer`. Neither includes the EMA update or data loading.
"""
import argparse, copy, json, statistics, time
import torch
from terrain_diffusion.models.unet import EDMUnet2D
from terrain_diffusion.trainers.consistency import scm_loss
from terrain_diffusion.models.sampling import sample_diffusion, sample_consistency

def unet(a, seed=0):
    torch.manual_seed(seed)
    net = EDMUnet2D(in_channels=1, out_channels=1, image_size=a.size, model_channels=a.channels,
                    model_channel_mults=tuple(a.mults), layers_per_block=a.layers, channels_per_head=min(64, a.channels))
    with torch.no_grad(): net.out_gain.fill_(1.0)
    return net

def trigflow_loss(net, x0, P_mean=-0.6, P_std=1.3, sd=0.5):
    "The diffusion trainer's loss (nbs/trainers/30_diffusion.ipynb), written out here."
    B = x0.shape[0]
    t = torch.atan(torch.exp(P_mean + P_std * torch.randn(B)) / sd).view(-1, 1, 1, 1)
    z = sd * torch.randn_like(x0)
    x_t, v_t = torch.cos(t) * x0 + torch.sin(t) * z, torch.cos(t) * z - torch.sin(t) * x0
    F, u = net(x_t / sd, t.flatten(), return_logvar=True)
    return ((-sd * F - v_t) ** 2 / (u.exp() * sd ** 2) + u).mean()

def timed(fn, repeats, warmup=1):
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--channels', type=int, default=32); p.add_argument('--mults', type=int, nargs='+', default=[1, 2, 2])
    p.add_argument('--layers', type=int, default=2); p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=8); p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--json', action='store_true', help='print one JSON line')
    a = p.parse_args()
    x0 = 0.5 * torch.randn(a.batch, 1, a.size, a.size)

    diff = unet(a).train()
    opt_d = torch.optim.Adam(diff.parameters(), lr=1e-4, betas=(0.9, 0.99))
    def diffusion_step():
        loss = trigflow_loss(diff, x0); loss.backward(); opt_d.step(); opt_d.zero_grad(set_to_none=True)

    teacher = unet(a).eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True).eval()
    opt_c = torch.optim.Adam(student.parameters(), lr=1e-4, betas=(0.9, 0.99))
    def consistency_step():
        loss, _ = scm_loss(student, teacher, x0, step=0, warmup_steps=10)
        loss.backward(); opt_c.step(); opt_c.zero_grad(set_to_none=True); student.norm_weights()

    t_diff, t_cons = timed(diffusion_step, a.repeats), timed(consistency_step, a.repeats)
    shape = (a.batch, 1, a.size, a.size)
    t_s32 = timed(lambda: sample_diffusion(teacher, shape, steps=32), max(1, a.repeats // 2))
    t_c2 = timed(lambda: sample_consistency(student, shape, steps=2), a.repeats)
    res = {'model': f'EDMUnet2D(ch={a.channels}, mults={a.mults}, layers={a.layers})', 'params': sum(p.numel() for p in teacher.parameters()),
           'batch': list(shape), 'threads': torch.get_num_threads(),
           'diffusion_step_s': t_diff, 'consistency_step_s': t_cons, 'step_ratio': t_cons / t_diff,
           'diffusion_32step_sample_s': t_s32, 'consistency_2step_sample_s': t_c2, 'sampling_speedup': t_s32 / t_c2}
    if a.json: print(json.dumps(res)); return
    print(f"{res['model']}, {res['params']} params, batch {shape}, {res['threads']} thread(s)")
    print(f"diffusion step    {t_diff * 1e3:8.1f} ms   (TrigFlow loss fwd+bwd + Adam)")
    print(f"consistency step  {t_cons * 1e3:8.1f} ms   (teacher fwd + student JVP + bwd + Adam + norm_weights)")
    print(f"ratio             {t_cons / t_diff:8.2f} x   (budget <= 3x)")
    print(f"sampling: 32-step diffusion {t_s32 * 1e3:.1f} ms, 2-step consistency {t_c2 * 1e3:.1f} ms, speed-up {t_s32 / t_c2:.1f}x")

if __name__ == '__main__': main()
