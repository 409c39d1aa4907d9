"""Speed of td_generate's windowed sampling, as ratios measured side by side in one run:

1. megapixels per second of a 2-step consistency model vs a 32-step diffusion model (2 phases), same U-Net, same region;
2. window-blending overhead: the same area generated with overlapping blended windows (stride = window/2) vs as
   independent tiles (stride = window, one window per pixel), for both samplers.

    OMP_NUM_THREADS=1 python bench/bench_generate.py [--size 128 --channels 16 --window 32 --repeats 3]

The U-Net is the quickstart main job's architecture (untrained: speed does not depend on the weights), exported as
td_export would into a temporary folder, and generated through `generate_elevation` (what td_generate calls),
so model loading is included and interpreter start-up is not. Times are medians of --repeats runs.
"""
import argparse, json, statistics, tempfile, time
from pathlib import Path
import torch
from terrain_diffusion.models.unet import EDMUnet2D
from terrain_diffusion.eval.generate import generate_elevation

def export(path, kind, a):
    torch.manual_seed(0)
    net = EDMUnet2D(in_channels=1, out_channels=1, image_size=a.window, model_channels=a.channels, model_channel_mults=(1, 2, 2),
                    layers_per_block=1, midblock_attention=False, channels_per_head=a.channels)
    with torch.no_grad(): net.out_gain.fill_(1.0)
    net.save_pretrained(path)
    (Path(path)/'export.json').write_text(json.dumps({'format': 'terrain_diffusion.export/1', 'kind': kind, 'sigma_data': 0.5,
        'image_shape': [1, a.window, a.window], 'cond_img_channels': 0, 'conditional_inputs': [], 'metres': None,
        'pixel_size_m': None, 'stats': {}}))
    return path

def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=128, help='side of the generated region (pixels)')
    p.add_argument('--channels', type=int, default=16)
    p.add_argument('--window', type=int, default=32)
    p.add_argument('--repeats', type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    region = (0, 0, a.size, a.size)
    mp = a.size * a.size / 1e6
    with tempfile.TemporaryDirectory() as d:
        dm, cm = export(Path(d)/'diffusion', 'diffusion', a), export(Path(d)/'consistency', 'consistency', a)
        t = {}
        for name, m, steps in (('diffusion 32 steps', dm, 32), ('consistency 2 steps', cm, 2)):
            for stride, how in ((a.window // 2, 'blended'), (a.window, 'independent tiles')):
                t[name, how] = timed(lambda: generate_elevation(m, region, 0, steps, None, a.window, stride), a.repeats)
    print(f"region {a.size}x{a.size} px, window {a.window}, U-Net {a.channels} channels, {torch.get_num_threads()} thread(s)")
    print(f"{'':22s}{'blended s':>10s}{'MP/s':>9s}{'tiles s':>10s}{'MP/s':>9s}{'blend overhead':>16s}")
    for name in ('diffusion 32 steps', 'consistency 2 steps'):
        b, i = t[name, 'blended'], t[name, 'independent tiles']
        print(f"{name:22s}{b:10.2f}{mp / b:9.4f}{i:10.2f}{mp / i:9.4f}{b / i:15.2f}x")
    r = t['diffusion 32 steps', 'blended'] / t['consistency 2 steps', 'blended']
    print(f"2-step consistency / 32-step diffusion, megapixels per second (blended): {r:.1f}x")

if __name__ == '__main__':
    main()
