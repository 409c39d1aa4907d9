"Configs you can trust: every key declared once, typed, range-checked and named before anything is built."
import json, shutil
from pathlib import Path
import pytest
from terrain_diffusion.config import (ConfigError, Key, REQUIRED, RENAMED, load_config, apply_overrides, validate_config,
                                      config_schema)
from terrain_diffusion.registry import import_builtins, lookup
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT/'configs').rglob('*') if p.suffix in ('.cfg', '.yaml'))
import_builtins()

def _typos(cfg):
    "(section, key, misspelt key) for every plain key of every section of a config."
    for sec, node in dict(cfg).items():
        for k, v in dict(node).items():
            if str(k).startswith('@') or isinstance(v, dict): continue
            yield sec, k, k + k[-1]

def _refused(cfg, source='the config', overridden=()) -> str:
    with pytest.raises(ConfigError) as e: validate_config(cfg, source, overridden=overridden)
    msg = str(e.value)
    assert '\n' not in msg, msg
    return msg

def test_every_shipped_config_is_valid_and_names_its_trainer():
    assert len(CONFIGS) >= 20
    for p in CONFIGS:
        cfg = validate_config(load_config(p), str(p))
        assert lookup('trainer', cfg['trainer_class']['@trainer']).config_schema is not None, p

@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(ROOT/'configs')) for p in CONFIGS])
def test_each_key_misspelt_in_the_file_is_one_line_naming_the_closest_key(path):
    "In-process through the validation function (teacher models and stores of full-size configs need not exist)."
    cfg = load_config(path)
    n = 0
    for sec, key, typo in _typos(cfg):
        bad = json.loads(json.dumps(dict(cfg)))
        bad[sec] = {(typo if k == key else k): v for k, v in bad[sec].items()}
        msg = _refused(bad, str(path))
        assert f'{sec}.{typo}' in msg and f"'{sec}.{key}'" in msg, msg
        n += 1
    assert n >= 10

@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(ROOT/'configs')) for p in CONFIGS])
def test_each_part_section_misspelt_is_one_line_naming_the_closest_section(path):
    "A misspelt `@` section ([val_datset]) would be built and never read: refused, naming the section the trainer builds."
    cfg = load_config(path)
    parts = [sec for sec, node in dict(cfg).items() if any(str(k).startswith('@') for k in node) and sec not in ('trainer_class', 'train_dataset')]
    if not parts: pytest.skip('no part section other than train_dataset')
    for sec in parts:
        bad = json.loads(json.dumps(dict(cfg)))
        bad[sec[:-1] + sec[-1] * 2] = bad.pop(sec)
        msg = _refused(bad, str(path))
        assert f'[{sec[:-1] + sec[-1] * 2}]' in msg and f'did you mean [{sec}]?' in msg, msg

@pytest.mark.parametrize('rel,sec,key', [('consistency_base/consistency_base_128-3.cfg', 'consistency', 'P_mean'),
                                          ('gan/gan.cfg', 'evaluation', 'validate_epochs'),
                                          ('quickstart/terrain.cfg', 'evaluation', 'max_reference'),
                                          ('examples/toy.cfg', 'model', 'width')])
def test_td_train_refuses_a_misspelt_key_in_the_file_with_exit_2_and_writes_nothing(tmp_path, rel, sec, key):
    text = (ROOT/'configs'/rel).read_text()
    lines = text.split('\n')
    start = lines.index(f'[{sec}]')
    i = next(j for j in range(start + 1, len(lines)) if lines[j].startswith(f'{key} ='))
    lines[i] = lines[i].replace(key, key + key[-1], 1)
    cfg = tmp_path/'c.cfg'; cfg.write_text('\n'.join(lines))
    r = run_cli(['td_train', '-c', str(cfg)], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert f'{sec}.{key}{key[-1]}' in r.stderr and f"'{sec}.{key}'" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c.cfg']

def _valid_other(key:Key):
    "A value the key allows, different from its default where the key allows more than one."
    d = None if key.default is REQUIRED else key.default
    if key.choices: return next((c for c in reversed(key.choices) if c != d), key.choices[0])
    if key.type == 'bool': return not d
    if key.type in ('str', 'path'): return 'some/where'
    if key.type == 'any': return ['a', 'b']
    if key.type.startswith('list'):
        lo, hi = key.lo if key.lo is not None else 0, key.hi if key.hi is not None else 4
        v = (lo + hi) / 2 if key.type == 'list[float]' else int(lo) + 1
        return [v] * (key.length[0] if key.length else 1)
    lo, hi = key.lo, key.hi
    if key.type == 'int':
        v = (d if d is not None else (lo or 0)) + 1
        return v if hi is None or v <= hi else int(lo)
    if lo is not None and hi is not None: return (lo + hi) / 2
    return (d if d is not None else (lo or 0)) + 0.5

TRAINER_CONFIGS = {'diffusion': 'quickstart/terrain.cfg', 'consistency': 'quickstart/consistency_terrain.cfg',
                   'autoencoder': 'quickstart/autoencoder.yaml', 'gan': 'quickstart/gan.cfg', 'toy': 'examples/toy.cfg'}

@pytest.mark.parametrize('trainer', list(TRAINER_CONFIGS))
def test_every_declared_key_can_be_overridden(trainer):
    cfg = load_config(ROOT/'configs'/TRAINER_CONFIGS[trainer])
    schema = config_schema(lookup('trainer', trainer))
    n = 0
    for sec, keys in schema.items():
        for k, key in keys.items():
            value = _valid_other(key)
            if sec == 'evaluation' and k == 'sample_steps' and trainer == 'consistency': value = 1
            out = validate_config(apply_overrides(cfg, {f'{sec}.{k}': value}), overridden={f'{sec}.{k}'})
            assert out[sec][k] == value, (sec, k, value, out[sec][k])
            n += 1
    assert n >= 30

BAD = [  # (trainer, override, value, what the one line must say)
    ('toy', 'training.batch_size', 0, 'expected an integer >= 1'),
    ('toy', 'training.batch_size', True, 'expected an integer >= 1'),
    ('toy', 'training.epochs', -1, 'expected an integer >= 0'),
    ('toy', 'training.log_every_steps', 0, 'expected an integer >= 1'),
    ('toy', 'training.max_grad_norm', -1.0, 'expected a number > 0 or null'),
    ('toy', 'training.mixed_precision', 'fp32', 'expected one of no, bf16, fp16, fp8'),
    ('toy', 'training.gradient_accumulation_steps', 1.5, 'expected an integer >= 1'),
    ('toy', 'training.compile', 'yes', 'expected true or false'),
    ('toy', 'training.nonfinite_policy', 'ignore', 'expected one of skip, stop'),
    ('toy', 'logging.save_epochs', -2, 'expected an integer >= 0'),
    ('toy', 'logging.n_samples', 0, 'expected an integer >= 1'),
    ('toy', 'evaluation.validate_epochs', '5', 'expected an integer >= 0'),
    ('toy', 'wandb.mode', 'offlin', 'expected one of online, offline, disabled, shared'),
    ('toy', 'dataloader_kwargs.num_workers', -1, 'expected an integer >= 0'),
    ('toy', 'dataloader_kwargs.pin_memory', 1, 'expected true or false'),
    ('toy', 'ema.sigma_rels', [0], 'expected a non-empty list of numbers in (0, 0.28]'),
    ('diffusion', 'ema.sigma_rels', [2.5], 'expected a non-empty list of numbers in (0, 0.300283]'),
    ('diffusion', 'optimizer.betas', [0.9], 'expected a list of 2 numbers in [0, 1) or null'),
    ('diffusion', 'optimizer.lr', 0, 'expected a number > 0'),
    ('diffusion', 'optimizer.type', 'adamm', 'expected one of adam, adamw, sgd'),
    ('diffusion', 'diffusion.sigma_data', 0, 'expected a number > 0'),
    ('diffusion', 'diffusion.cond_dropout', 1.5, 'expected a number in [0, 1)'),
    ('diffusion', 'evaluation.n_samples', -3, 'expected an integer >= 1'),
    ('diffusion', 'evaluation.sample_steps', 0, 'expected an integer >= 1'),
    ('diffusion', 'evaluation.solver', 'euler', 'expected one of dpmpp2m, heun'),
    ('diffusion', 'model.model_channels', 'wide', "expected an integer (an argument of @model = \"unet\")"),
    ('consistency', 'evaluation.sample_steps', 3, 'expected one of 1, 2'),
    ('consistency', 'consistency.use_logvar', 'no', 'expected true or false'),
    ('consistency', 'model.guidance_scale', 'high', 'expected a number'),
    ('autoencoder', 'autoencoder.perceptual', 'lpips', 'expected one of pyramid_spectrum, slope_curvature, none'),
    ('autoencoder', 'autoencoder.kl_weight', -0.1, 'expected a number >= 0'),
    ('gan', 'gan.lr_warmup_factor', 0, 'expected a number > 0'),
    ('gan', 'gan.disc_max_grad_norm', -5, 'expected a number > 0 or null'),
]

@pytest.mark.parametrize('trainer,key,value,expected', BAD, ids=[f'{k}={v}' for _, k, v, _ in BAD])
def test_out_of_range_or_wrong_type_is_one_line_naming_key_and_allowed_range(trainer, key, value, expected):
    cfg = apply_overrides(load_config(ROOT/'configs'/TRAINER_CONFIGS[trainer]), {key: value})
    msg = _refused(cfg, overridden={key})
    assert f"override '{key}': {key} = {json.dumps(value)} is not allowed" in msg and expected in msg, msg

@pytest.mark.parametrize('override,expected', [
    ('training.max_grad_norm=-1', "training.max_grad_norm = -1 is not allowed; expected a number > 0 or null"),
    ('training.batch_size=true', "training.batch_size = true is not allowed; expected an integer >= 1"),
    ('wandb.mode="offlin"', "expected one of online, offline, disabled, shared"),
    ('dataloader_kwargs.num_wrkers=2', "did you mean 'dataloader_kwargs.num_workers'?"),
    ('ema.sigma_rels=[0]', "ema.sigma_rels = [0] is not allowed"),
    ('training.gradient_clip_val=1.0', "training.gradient_clip_val is not a key here; it became training.max_grad_norm"),
])
def test_td_train_bad_values_exit_2_one_line_nothing_written(tmp_path, override, expected):
    r = run_cli(['td_train', '-c', str(ROOT/'configs'/'examples'/'toy.cfg'), '-o', f'logging.save_dir={tmp_path/"run"}',
                 '-o', override], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert expected in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []

def test_reference_names_in_a_ported_config_name_the_key_they_became():
    cfg = dict(load_config(ROOT/'configs'/'examples'/'toy.cfg'))
    for old, new in [('training.gradient_clip_val', 'training.max_grad_norm'), ('training.train_batch_size', 'training.batch_size'),
                     ('evaluation.validation_steps', 'evaluation.val_batches'), ('training.kl_weight', 'autoencoder.kl_weight'),
                     ('training.P_mean', 'diffusion.P_mean'), ('evaluation.n_images', 'evaluation.n_samples'),
                     ('gan.eval_samples', 'evaluation.n_samples'), ('autoencoder.max_grad_norm', 'training.max_grad_norm')]:
        assert RENAMED[old].startswith(new)
        sec, key = old.split('.')
        bad = json.loads(json.dumps(cfg)); bad.setdefault(sec, {})[key] = 1
        msg = _refused(bad)
        assert f'{old} is not a key here; it became {new}' in msg, msg

def test_valid_keys_a_trainer_reads_are_accepted_as_overrides():
    "The loop's validator used to know only its own keys: evaluation.val_batch_size was refused."
    cfg = validate_config(apply_overrides(load_config(ROOT/'configs'/'quickstart'/'terrain.cfg'), {'evaluation.val_batch_size': 8}))
    assert cfg['evaluation']['val_batch_size'] == 8

def test_print_config_resolves_defaults_and_overrides_and_trains_nothing(tmp_path):
    cfg = ROOT/'configs'/'quickstart'/'terrain.cfg'
    r = run_cli(['td_train', '-c', str(cfg), '--print-config', '-o', 'training.epochs=3'], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'epochs = 3  # epochs to train' in r.stdout
    assert 'compile = false  # ' in r.stdout                       # a default the file leaves out
    assert 'n_samples = 16  # terrains generated in each evaluation' in r.stdout
    r = run_cli(['td_train', '-c', str(cfg), '--print-config', '--json'], cwd=tmp_path)
    out = json.loads(r.stdout)
    assert out['training']['epochs']['value'] == load_config(cfg)['training']['epochs'] and out['ema']['sigma_rels']['doc']
    assert list(tmp_path.iterdir()) == []

def test_a_mistyped_config_path_names_the_closest_file(tmp_path):
    r = run_cli(['td_train', '-c', 'configs/quickstart/terain.cfg'], cwd=ROOT)
    assert r.returncode == 2 and "did you mean 'configs/quickstart/terrain.cfg'?" in r.stderr, r.stderr

def test_a_missing_store_or_teacher_names_the_command_that_makes_it(tmp_path):
    shutil.copy(ROOT/'configs'/'consistency_base'/'consistency_base_128-3.cfg', tmp_path/'c.cfg')
    r = run_cli(['td_train', '-c', 'c.cfg', '-o', f'train_dataset.path={tmp_path/"c.cfg"}',
                 '-o', f'val_dataset.path={tmp_path/"c.cfg"}'], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert "needs 'runs/diffusion_128-3/saved_model', which does not exist; make it with: td_train -c " \
           "configs/diffusion_base/diffusion_128-3.cfg, then td_export" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c.cfg']
    r = run_cli(['td_train', '-c', 'configs/quickstart/terrain.cfg', '-o', 'train_dataset.path=nowhere.h5',
                 '-o', 'val_dataset.path=nowhere.h5', '--debug-run'], cwd=ROOT)
    assert r.returncode == 2 and 'nowhere.h5' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_a_plugin_trainer_that_declares_nothing_keeps_its_sections_unchecked_but_the_loops_checked():
    from terrain_diffusion.registry import registry
    from terrain_diffusion.examples.toy import ToyTrainer
    class Plain(ToyTrainer): config_schema = None
    registry.trainer.register('plain_cfg_test', func=Plain)
    base = {'trainer_class': {'@trainer': 'plain_cfg_test'}, 'training': {}, 'train_dataset': {'@dataset': 'toy_fields'},
            'mine': {'anything': 1}}
    assert validate_config(base)['mine'] == {'anything': 1}
    assert 'did you mean' in _refused({**base, 'training': {'batch_sise': 2}})

def test_the_config_notebook_shows_the_current_table_and_print_config():
    "The table and the --print-config output stored in nbs/00_config.ipynb are what the schemas give now."
    from terrain_diffusion.config import schema_table
    nb = json.loads((ROOT/'nbs'/'00_config.ipynb').read_text())
    outs = {c['id']: c.get('outputs') for c in nb['cells']}
    assert ''.join(outs['f0a1c0e4'][0]['data']['text/markdown']) == schema_table(['diffusion', 'consistency', 'autoencoder', 'gan', 'toy'])
    r = run_cli(['td_train', '-c', 'configs/quickstart/terrain.cfg', '--print-config'], cwd=ROOT)
    assert ''.join(outs['f0a1c0e2'][0]['text']) == r.stdout
