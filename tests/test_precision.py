"""bf16 mixed precision, `torch.compile` and channels-last as config switches, on CPU: `training.mixed_precision = "bf16"`
trains under autocast and resumes bit for bit for every trainer; `training.compile` and `training.channels_last` give
the loss curve of the plain run within a tolerance. Tiny runs of a few steps each."""
import pytest
import torch
from conftest import TOY_CFG
from test_conformance import builtin_cases
from terrain_diffusion.config import load_config
from terrain_diffusion.training.train import TrainingRun

QUIET = {'logging.save_epochs': 0, 'logging.samples_every_epochs': 0, 'evaluation.validate_epochs': 0, 'wandb.mode': 'disabled',
         'training.log_every_steps': 1}

def _with(config, **training):
    "The config (a path) with keys of [training] set, as a user would write them in the file."
    cfg = load_config(config)
    for k, v in training.items(): cfg['training'][k] = v
    return cfg

def _flat(x, prefix='', out=None):
    out = {} if out is None else out
    if isinstance(x, torch.Tensor): out[prefix] = x.detach().clone()
    elif isinstance(x, dict):
        for k, v in x.items(): _flat(v, f'{prefix}.{k}', out)
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x): _flat(v, f'{prefix}.{i}', out)
    else: out[prefix] = x
    return out

def _state(run) -> dict:
    "Every model, optimizer and EMA tensor of a run, flat."
    out = {}
    for i, m in enumerate(run.trainer.get_accelerate_modules()): _flat(m.state_dict(), f'module{i}', out)
    if hasattr(run.trainer, 'ema'): _flat(run.trainer.ema.state_dict(), 'ema', out)
    return out

def _autocast_seen(run) -> list:
    "Records, per forward of the main model's first submodule, whether CPU autocast was on."
    seen, model = [], run.accelerator.unwrap_model(run.trainer.get_model_for_saving())
    inner = next(m for m in model.modules() if m is not model)
    inner.register_forward_hook(lambda *a: seen.append(torch.is_autocast_enabled('cpu')))
    return seen

@pytest.mark.parametrize('name', ['toy', 'diffusion', 'consistency', 'autoencoder', 'gan'])
def test_bf16_trains_under_autocast_and_resumes_bit_exactly(name, store, tmp_path):
    cfg, overrides, _ = builtin_cases(store, tmp_path)[name]
    ov = {**overrides, **QUIET, 'training.mixed_precision': 'bf16', 'training.epoch_steps': 2, 'logging.temp_save_epochs': 1}
    def make(folder, epochs, **kw):
        return TrainingRun(cfg, {**ov, 'logging.save_dir': str(tmp_path/folder), 'training.epochs': epochs},
                           progress='off', resume='fresh', **kw)
    first = make('a', 1); first.fit(); first.close()
    resumed = make('a', 2, ckpt=tmp_path/'a'/'latest_checkpoint')
    seen = _autocast_seen(resumed)
    resumed.fit()
    straight = make('b', 2); straight.fit()
    assert seen and all(seen), f'{name}: the model ran outside bf16 autocast'
    a, b = _state(resumed), _state(straight)
    assert a.keys() == b.keys()
    diff = [k for k in a if not (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])]
    assert not diff, f'{name}: resumed != straight in {diff[:5]}'
    logs = lambda run: [r for r in run.history if r['kind'] == 'train' and r['epoch'] == 1]
    assert logs(resumed) == logs(straight) and len(logs(straight)) == 2
    resumed.close(); straight.close()
    plain = TrainingRun(cfg, {**ov, 'training.mixed_precision': 'no', 'logging.save_dir': str(tmp_path/'c'), 'training.epochs': 2},
                        progress='off', resume='fresh')
    plain.fit(); plain.close()
    c = _state(plain)                          # and bf16 is not a no-op: the fp32 run ends elsewhere
    assert any(not torch.equal(c[k], b[k]) for k in b if isinstance(b[k], torch.Tensor) and b[k].is_floating_point())

def _losses(config, tmp_path, folder, **training) -> tuple[list, TrainingRun]:
    run = TrainingRun(_with(config, **training), {**QUIET, 'training.epochs': 1, 'training.epoch_steps': 4,
                                                  'logging.save_dir': str(tmp_path/folder), 'logging.temp_save_epochs': 1},
                      progress='off', resume='fresh')
    try: run.fit()
    finally: run.close()
    return [r['loss'] for r in run.history if r['kind'] == 'train'], run

def test_compile_gives_the_same_loss_curve(tmp_path, monkeypatch):
    "training.compile = true compiles the prepared modules in place (here with a backend that needs no C++ compiler)."
    compile, calls = torch.nn.Module.compile, []
    def fast(self, *a, **kw):
        calls.append(type(self).__name__); return compile(self, *a, **{'backend': 'aot_eager', **kw})
    monkeypatch.setattr(torch.nn.Module, 'compile', fast)
    plain, _ = _losses(TOY_CFG, tmp_path, 'plain')
    compiled, run = _losses(TOY_CFG, tmp_path, 'compiled', compile=True)
    assert calls == ['Denoiser'] and run.trainer.model._compiled_call_impl is not None
    assert compiled == pytest.approx(plain, rel=1e-5, abs=1e-7) and len(plain) == 4
    from safetensors.torch import load_file                  # checkpoints keep the plain names
    assert set(load_file(str(tmp_path/'compiled'/'latest_checkpoint'/'model.safetensors'))) == \
           set(load_file(str(tmp_path/'plain'/'latest_checkpoint'/'model.safetensors')))

@pytest.mark.slow
def test_compile_with_the_default_backend(tmp_path):
    "The same with inductor, torch.compile's default (it builds C++ kernels: about a minute on a small CPU)."
    plain, _ = _losses(TOY_CFG, tmp_path, 'plain')
    compiled, _ = _losses(TOY_CFG, tmp_path, 'compiled', compile=True)
    assert compiled == pytest.approx(plain, rel=1e-4, abs=1e-6)

@pytest.mark.parametrize('name', ['toy', 'diffusion'])
def test_channels_last_gives_the_same_loss_curve(name, store, tmp_path):
    cfg, overrides, _ = builtin_cases(store, tmp_path)[name]
    def losses(folder, **training):
        run = TrainingRun(_with(cfg, **training), {**overrides, **QUIET, 'training.epochs': 1, 'training.epoch_steps': 3,
                                                   'logging.save_dir': str(tmp_path/folder), 'logging.temp_save_epochs': 0},
                          progress='off', resume='fresh')
        try: run.fit()
        finally: run.close()
        w = [p for p in run.trainer.get_model_for_saving().parameters() if p.ndim == 4]
        return [r['loss'] for r in run.history if r['kind'] == 'train'], w
    plain, w0 = losses('plain')
    cl, w1 = losses('cl', channels_last=True)
    assert w1 and all(p.is_contiguous(memory_format=torch.channels_last) for p in w1)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in w0)
    assert cl == pytest.approx(plain, rel=1e-4, abs=1e-6) and len(plain) == 3
