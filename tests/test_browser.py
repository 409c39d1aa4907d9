"""A real browser: JupyterLab in headless Chromium, driven by Selenium, runs a quickstart-sized notebook, and the live
view's loss curve and sample grid change on screen while it trains (compared by screenshots of those two widgets).

Needs the Debian packages `chromium` and `chromium-driver` (scripts/test.sh installs them) and `selenium` and
`jupyterlab` (the dev requirements); skipped, saying which is missing, without them.
Set TD_BROWSER_SHOTS=DIR to keep the screenshots."""
import importlib.util, io, json, os, re, secrets, shutil, socket, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = shutil.which('chromedriver')
missing = [n for n, p in (('chromium', CHROMIUM), ('chromedriver (chromium-driver)', DRIVER)) if p is None]
missing += [f'{m} (pip)' for m in ('selenium', 'jupyterlab') if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"real-browser test needs {', '.join(missing)}: "
                                                       "apt-get install chromium chromium-driver; pip install -e '.[dev]'")

STEPS, EVERY = 64, 8          # a CI-sized quickstart: 2 epochs of 32 steps, a picture every 8 steps

def notebook(work: Path) -> dict:
    "A quickstart-like notebook: a tile store of the bundled DEM, the quickstart config shrunk, `fit_live`."
    cells = [
        "from pathlib import Path\n"
        "from terrain_diffusion.data.dem_io import sample_dem\n"
        "from terrain_diffusion.data.store import build_store\n"
        "from terrain_diffusion.training.train import TrainingRun\n"
        "from terrain_diffusion.eval.live import fit_live\n"
        f"work = Path({str(work)!r})\n"
        "store = build_store(work/'quickstart.h5', [sample_dem()], tile_size=64, stride=16, progress=False)\n"
        "over = {'train_dataset.path': str(store), 'val_dataset.path': str(store), 'logging.save_dir': str(work/'run'),\n"
        f"        'training.epochs': 2, 'training.epoch_steps': {STEPS // 2}, 'training.batch_size': 4,\n"
        "        'training.log_every_steps': 2, 'logging.temp_save_epochs': 0, 'logging.samples_every_epochs': 0,\n"
        "        'evaluation.validate_epochs': 1, 'evaluation.val_batches': 1, 'evaluation.n_samples': 4,\n"
        "        'evaluation.sample_steps': 4, 'evaluation.max_reference': 8, 'ema.checkpoint_every_num_steps': 8}\n"
        f"run = TrainingRun({str(REPO/'configs'/'quickstart'/'terrain.cfg')!r}, over, resume='fresh', progress='off')",
        f"view = fit_live(run, n_samples=4, ncols=4, every_steps={EVERY})",
        "print('FIT DONE', run.state['step'], view.refreshes, 'costs', [round(c, 3) for c in view.costs])",
    ]
    return {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [],
                       'source': s} for i, s in enumerate(cells)],
            'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_for(fn, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = fn()
        if v: return v
        time.sleep(0.25)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')

# The two images of the live view (loss plot, sample grid), their boxes on the screen, and the step in its status line.
PROBE = """
const box = document.querySelector('.jp-OutputArea-output .widget-vbox');
if (!box) return null;
const imgs = [...box.querySelectorAll('img.widget-image')];
const status = box.querySelector('.widget-html-content');
const done = [...document.querySelectorAll('.jp-OutputArea-output pre')].map(e => e.textContent).find(t => t.includes('FIT DONE'));
if (imgs.length) imgs[imgs.length - 1].scrollIntoView({block: 'nearest'});
return {imgs: imgs.map(i => { const r = i.getBoundingClientRect();       // an image not drawn yet has no natural size
                                return i.naturalWidth ? [r.left, r.top, r.width, r.height] : [0, 0, 0, 0]; }),
        dpr: window.devicePixelRatio, status: status ? status.textContent : '', done: done || null};
"""

@pytest.fixture
def lab(tmp_path):
    "JupyterLab on 127.0.0.1 with a random token, serving `tmp_path/nb`; yields (url of the notebook, work folder)."
    nb_dir, work, cfg = tmp_path/'nb', tmp_path/'work', tmp_path/'jupyter'
    for d in (nb_dir, work, cfg/'labconfig'): d.mkdir(parents=True)
    (nb_dir/'live.ipynb').write_text(json.dumps(notebook(work)))
    # no news pop-up over the widgets
    (cfg/'labconfig'/'page_config.json').write_text(json.dumps(
        {'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(cfg), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime'),
           'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', 'WANDB_MODE': 'disabled'}
    env.pop('IN_TEST', None)
    log = open(tmp_path/'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1',
                             f'--ServerApp.port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
                             f'--ServerApp.root_dir={nb_dir}', '--LabApp.expose_app_in_browser=True'],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request
        def up():
            try: return urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=2).status == 200
            except OSError: return proc.poll() is not None and pytest.fail((tmp_path/'lab.log').read_text()[-3000:])
        wait_for(up, 90, 'JupyterLab to start')
        yield f'http://127.0.0.1:{port}/lab/tree/live.ipynb?token={token}', work
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()

@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--no-first-run', '--window-size=1400,1100',
              '--force-device-scale-factor=1', f'--user-data-dir={tmp_path/"chrome"}'):
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path/'chromedriver.log')), options=opts)
    driver.set_script_timeout(120)
    try: yield driver
    finally: driver.quit()

def crops(png: bytes, boxes, dpr):
    "The pixels of each box of a page screenshot, as bytes (equal bytes: the same picture on screen)."
    from PIL import Image
    im = Image.open(io.BytesIO(png)).convert('RGB')
    return [im.crop(tuple(round(v * dpr) for v in (x, y, x + w, y + h))).tobytes() if w > 0 and h > 0 else None
            for x, y, w, h in boxes]

def test_live_view_redraws_in_jupyterlab(lab, browser):
    url, work = lab
    browser.get(url)
    wait_for(lambda: browser.execute_script("return !!(window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                            " && window.jupyterapp.shell.currentWidget.sessionContext)"), 90,
             'the notebook to open in JupyterLab')
    browser.execute_async_script("""const done = arguments[arguments.length - 1];
        const panel = window.jupyterapp.shell.currentWidget;
        panel.sessionContext.ready.then(() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); done(true); });""")
    # (not awaited: the command's promise settles only when every cell has run)
    keep = os.environ.get('TD_BROWSER_SHOTS')
    seen, shots, final = [[], []], [], None     # per image: the distinct pictures in order, with the step they showed up
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        p = browser.execute_script(PROBE)
        if p and p['done']: final = p['done']; break
        if not p or len(p['imgs']) < 2: time.sleep(0.3); continue
        png = browser.get_screenshot_as_png()
        m = re.search(r'step (\d+)', p['status'])
        step = int(m.group(1)) if m else -1
        if step >= STEPS: continue                          # training has ended: only pictures from during it count
        for i, c in enumerate(crops(png, p['imgs'][:2], p['dpr'])):
            if c is not None and (not seen[i] or seen[i][-1][1] != c):
                seen[i].append((step, c))
                if keep: shots.append(png)
        time.sleep(0.2)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(shots): (Path(keep)/f'shot_{i:03d}.png').write_bytes(s)
    assert final is not None, f'the notebook did not finish in time; pictures seen: {[[s for s, _ in v] for v in seen]}'
    m = re.search(r'FIT DONE (\d+)', final)
    assert m and int(m.group(1)) == STEPS, final
    loss_steps, grid_steps = ([s for s, _ in v] for v in seen)
    print(f'loss curve: {len(loss_steps)} distinct pictures at steps {loss_steps}; '
          f'sample grid: {len(grid_steps)} at steps {grid_steps}; kernel: {final.strip()}; '
          f'{time.monotonic() - t0:.0f} s from run-all to the end')
    # changed at least three times during training: four distinct pictures, each seen before the last step
    assert len(loss_steps) >= 4, f'the loss curve changed {len(loss_steps) - 1} times on screen: steps {loss_steps}'
    assert len(grid_steps) >= 4, f'the sample grid changed {len(grid_steps) - 1} times on screen: steps {grid_steps}'
    assert (work/'run').is_dir()
