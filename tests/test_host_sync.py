"""No host read in the step path: every trainer's `train_step` and the loop's accumulation leave their logs on the
device; the loop reads them once per `log_every_steps` (and at the end of an epoch). A torch function mode and a torch
dispatch mode count every host read (`Tensor.item`, `float(t)`, `int(t)`, `bool(t)`, `.cpu()`, `.tolist()`, `.numpy()`,
`aten._local_scalar_dense`) while the loop trains, except inside the data loader and at the log points."""
import math
from collections import Counter
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from conftest import TOY_CFG
from test_conformance import builtin_cases
from terrain_diffusion.examples.toy import ToyTrainer
from terrain_diffusion.registry import registry, registered_names
from terrain_diffusion.training.train import TrainingRun, MetricWindow

READS = {'item', '__float__', '__int__', '__bool__', '__index__', 'cpu', 'tolist', 'numpy'}

class HostReads(TorchFunctionMode):
    """Counts host reads of tensors while `on`, except of `host_side(tensor)` ones: the step counters that torch's
    optimizers keep on the host by design (reading them does not wait for the device)."""
    def __init__(self):
        super().__init__(); self.on, self.reads, self.host_side = False, Counter(), lambda t: False
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.on and getattr(func, '__name__', '') in READS and not (args and self.host_side(args[0])):
            self.reads[func.__name__] += 1
        return func(*args, **(kwargs or {}))

def _step_counters(run):
    "A test: is this tensor one of the run's optimizers' host-side `step` counters?"
    opts = [getattr(o, 'optimizer', o) for o in run.trainer.get_accelerate_modules() if isinstance(getattr(o, 'optimizer', o), torch.optim.Optimizer)]
    return lambda t: any(t is s.get('step') and t.device.type == 'cpu' for o in opts for s in o.state.values())

class ScalarReads(TorchDispatchMode):
    "Counts `aten._local_scalar_dense` (what every read of one value comes down to) while `owner.on`, as `HostReads`."
    def __init__(self, owner):
        super().__init__(); self.owner = owner
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.owner.on and func is torch.ops.aten._local_scalar_dense.default and not self.owner.host_side(args[0]):
            self.owner.reads['_local_scalar_dense'] += 1
        return func(*args, **(kwargs or {}))

def _paused(mode, fn):
    def wrapped(*a, **kw):
        was, mode.on = mode.on, False
        try: return fn(*a, **kw)
        finally: mode.on = was
    return wrapped

class _Stream:
    "The loop's batch iterator with counting paused while it yields (the data loader is host work)."
    def __init__(self, it, mode): self.it, self.mode = it, mode
    def __iter__(self): return self
    def __next__(self): return _paused(self.mode, next)(self.it)

def count_host_reads(config, overrides, monkeypatch, steps:int=4, log_every:int=2) -> tuple[Counter, list]:
    "Host reads while `fit` trains `steps` steps, logging every `log_every`; and the run's train log records."
    mode = HostReads()
    batches, means, log, save, evaluate = (TrainingRun._batches, MetricWindow.means, TrainingRun.log,
                                           TrainingRun.save_checkpoint, TrainingRun.evaluate)
    monkeypatch.setattr(TrainingRun, '_batches', lambda self: _Stream(_paused(mode, batches)(self), mode))
    for cls, name, fn in ((MetricWindow, 'means', means), (TrainingRun, 'log', log),
                          (TrainingRun, 'save_checkpoint', save), (TrainingRun, 'evaluate', evaluate)):
        monkeypatch.setattr(cls, name, _paused(mode, fn))
    epoch = TrainingRun._train_epoch
    def train_epoch(self, progress):
        with mode, ScalarReads(mode):
            mode.on = True
            try: return epoch(self, progress)
            finally: mode.on = False
    monkeypatch.setattr(TrainingRun, '_train_epoch', train_epoch)
    ov = {**overrides, 'training.epochs': 1, 'training.epoch_steps': steps, 'training.log_every_steps': log_every,
          'logging.temp_save_epochs': 0, 'logging.save_epochs': 0, 'logging.samples_every_epochs': 0,
          'evaluation.validate_epochs': 0, 'wandb.mode': 'disabled', 'ema.checkpoint_every_num_steps': 1000}
    run = TrainingRun(config, ov, progress='off', debug_run=True)
    mode.host_side = _step_counters(run)
    try: history = run.fit()
    finally: run.close()
    return mode.reads, [h for h in history if h['kind'] == 'train']

@pytest.mark.parametrize('name', ['toy', 'diffusion', 'consistency', 'autoencoder', 'gan'])
def test_no_host_read_between_logs(name, store, tmp_path, monkeypatch):
    cfg, overrides, _ = builtin_cases(store, tmp_path)[name]
    reads, logs = count_host_reads(cfg, overrides, monkeypatch)
    print(f'{name}: host reads in 4 steps: {dict(reads)}')
    assert [r['step'] for r in logs] == [2, 4]                     # the window is read at each log, and only there
    assert all(isinstance(r['loss'], float) for r in logs), logs
    assert not reads, f'{name}: {sum(reads.values())} host reads in the step path: {dict(reads)}'

class FloatLogs(ToyTrainer):
    "A plugin trainer written the old way: it logs Python floats (one host read per value per step)."
    def train_step(self, state, batch):
        return {k: float(v) for k, v in super().train_step(state, batch).items()}

if 'test_host_sync.float_logs' not in registered_names('trainer'): registry.trainer.register('test_host_sync.float_logs', func=FloatLogs)

def test_float_logs_still_work_and_are_counted(monkeypatch):
    "Plain numbers from a plugin trainer are summed on the host as before; the counter sees the reads they cost."
    reads, logs = count_host_reads(TOY_CFG, {'trainer_class.@trainer': 'test_host_sync.float_logs'}, monkeypatch)
    assert reads['_local_scalar_dense'] == 4 * 3, dict(reads)            # loss, grad_norm, skipped per step
    assert [r['step'] for r in logs] == [2, 4] and all(isinstance(r['loss'], float) and r['skipped'] == 0 for r in logs)

def test_window_reads_tensors_once_and_counts_nonfinite_on_device():
    w = MetricWindow()
    w.add({'loss': torch.tensor(1.0), 'skipped': torch.tensor(0), 'lr': 0.5})
    w.add({'loss': torch.tensor(float('nan')), 'skipped': torch.tensor(1), 'lr': 0.5})
    w.add({'loss': 3.0, 'skipped': 0, 'lr': 0.5})                      # numbers and tensors mix
    mode = HostReads(); mode.on = True
    with mode: m = w.means()
    assert mode.reads == Counter(tolist=1)                              # the whole window in one transfer
    assert m['nonfinite'] == 1 and m['skipped'] == 1 and m['lr'] == 0.5 and math.isnan(m['loss'])
    w.reset(); w.add({'loss': torch.tensor(2.0)}); w.add({'loss': torch.tensor(4.0)})
    assert w.means() == {'loss': 3.0, 'nonfinite': 0, 'skipped': 0}
