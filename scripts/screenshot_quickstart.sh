#!/usr/bin/env bash
# Dev tool (not run by CI): run the quickstart tutorial at full length in JupyterLab, in headless Chromium driven by
# Selenium (as a user would: the kernel trains while the page shows the live view), and save screenshots under docs/:
#   docs/quickstart_live_view_midrun.png  the live view while training runs (about half-way), redrawn since the start
#   docs/quickstart_live_view.png         the live view when the fit has ended
#   docs/quickstart_notebook.png          the whole executed notebook, exported to HTML (static pictures, no widgets)
# Needs (dev only):  apt-get install -y chromium chromium-driver;  pip install -e ".[dev]" (selenium, jupyterlab)
# Usage (venv active): scripts/screenshot_quickstart.sh      (about ten minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg
tmp=$(mktemp -d)
# The notebook finds the configs at ../../configs (relative to itself) and writes data, runs and models to
# TD_QUICKSTART_DIR, so a copy two folders down in $tmp/nb runs without touching the repository.
mkdir -p "$tmp/nb/tutorials/quickstart" "$tmp/work" "$tmp/config/labconfig"
ln -s "$repo/configs" "$tmp/nb/configs"
cp nbs/tutorials/quickstart.ipynb "$tmp/nb/tutorials/quickstart/quickstart.ipynb"
export TD_QUICKSTART_DIR="$tmp/work"
unset IN_TEST
echo '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}' > "$tmp/config/labconfig/page_config.json"
token=$(python -c 'import secrets; print(secrets.token_hex(16))')
JUPYTER_CONFIG_DIR=$tmp/config JUPYTER_RUNTIME_DIR=$tmp/runtime python -m jupyterlab --no-browser --allow-root \
    --ServerApp.ip=127.0.0.1 --ServerApp.port=8899 --ServerApp.port_retries=0 --IdentityProvider.token="$token" \
    --ServerApp.root_dir="$tmp/nb" --LabApp.expose_app_in_browser=True > "$tmp/lab.log" 2>&1 &
lab_pid=$!
trap 'kill "$lab_pid" 2>/dev/null || true' EXIT
for _ in $(seq 90); do curl -sf "http://127.0.0.1:8899/api/status?token=$token" >/dev/null && break; sleep 1; done

python - "http://127.0.0.1:8899/lab/tree/tutorials/quickstart/quickstart.ipynb?token=$token" "$tmp" <<'PY'
import re, shutil, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
url, tmp = sys.argv[1], sys.argv[2]
opts = webdriver.ChromeOptions(); opts.binary_location = shutil.which('chromium')
for f in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
          '--disable-component-update', '--disable-sync', '--no-first-run', '--hide-scrollbars', '--window-size=1400,1000',
          '--force-device-scale-factor=1', f'--user-data-dir={tmp}/chrome'):
    opts.add_argument(f)
d = webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=opts)
d.set_script_timeout(120)
try:
    d.get(url)
    for _ in range(360):
        if d.execute_script("return !!(window.jupyterapp && jupyterapp.shell.currentWidget && jupyterapp.shell.currentWidget.sessionContext)"): break
        time.sleep(0.25)
    d.execute_async_script("""const done = arguments[arguments.length - 1];
        jupyterapp.shell.currentWidget.sessionContext.ready.then(() => { jupyterapp.commands.execute('notebook:run-all-cells'); done(true); });""")
    # keep the live view's cell at the top of the notebook's scroll area; read its status line
    probe = """const box = document.querySelector('.jp-OutputArea-output .widget-vbox'); if (!box) return null;
        const s = document.querySelector('.jp-WindowedPanel-outer'), c = box.closest('.jp-Cell');
        s.scrollTop += c.getBoundingClientRect().top - s.getBoundingClientRect().top - 10;
        const st = box.querySelector('.widget-html-content'); return st ? st.textContent : '';"""
    # the notebook's own model: done when every code cell has run and the kernel is idle; stop at an error
    state = """const nb = jupyterapp.shell.currentWidget, cells = nb.content.model.cells; let ran = 0, code = 0, err = null;
        for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue; code++;
            if (c.executionCount != null) ran++;
            for (let j = 0; j < c.outputs.length; j++) if (c.outputs.get(j).type === 'error') err = i; }
        return {ran, code, err, idle: nb.sessionContext.session.kernel.status === 'idle'};"""
    total, mid, t0, pictures = 300, False, time.monotonic(), {}   # pictures: step drawn -> seconds into the run seen
    while time.monotonic() - t0 < 3600:
        status = d.execute_script(probe) or ''
        m = re.search(r'step (\d+)', status)
        p = re.search(r'samples from step (\d+)', status)
        if p and int(p.group(1)) not in pictures: pictures[int(p.group(1))] = round(time.monotonic() - t0)
        if not mid and m and int(m.group(1)) >= total // 2 and 'samples from step' in status:
            d.save_screenshot(f'{tmp}/lab_mid.png'); mid = True; print('mid-run:', status, flush=True)
        st = d.execute_script(state)
        if st['err'] is not None: sys.exit(f'the quickstart failed in cell {st["err"]}')
        if st['idle'] and st['ran'] == st['code']: break
        time.sleep(2)
    time.sleep(2); d.execute_script(probe); time.sleep(1)
    d.save_screenshot(f'{tmp}/lab_end.png'); print('end:', d.execute_script(probe), flush=True)
    print(f'{len(pictures)} pictures seen in the browser (step: seconds after run-all): {pictures}', flush=True)
    d.execute_async_script("const done = arguments[arguments.length - 1]; jupyterapp.commands.execute('docmanager:save').then(() => done(true));")
finally: d.quit()
PY
kill "$lab_pid"; trap - EXIT

# The whole notebook as HTML (the `#| hide` cells dropped); the widget's last pictures are plain images in it.
jupyter nbconvert --to html --RegexRemovePreprocessor.patterns='^#\| hide' --output-dir "$tmp/html" "$tmp/nb/tutorials/quickstart/quickstart.ipynb"
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$tmp/chrome-html" \
    --window-size=1400,6000 --virtual-time-budget=20000 --screenshot="$tmp/html.png" "file://$tmp/html/quickstart.html" 2>>"$tmp/chromium.log"

shrink() {  # shrink IN.png OUT.png: crop the empty bottom, quantise to 128 colours
  python - "$1" "$2" <<'PY'
import sys
from PIL import Image, ImageChops
im = Image.open(sys.argv[1]).convert('RGB')
bg = Image.new('RGB', im.size, im.getpixel((im.width - 1, im.height - 1)))
box = ImageChops.difference(im, bg).getbbox()
if box: im = im.crop((0, 0, im.width, min(im.height, box[3] + 20)))
im.quantize(128, method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)
PY
}
mkdir -p docs
[ -f "$tmp/lab_mid.png" ] && shrink "$tmp/lab_mid.png" docs/quickstart_live_view_midrun.png
shrink "$tmp/lab_end.png" docs/quickstart_live_view.png
shrink "$tmp/html.png" docs/quickstart_notebook.png
echo "wrote docs/quickstart_live_view_midrun.png, docs/quickstart_live_view.png, docs/quickstart_notebook.png (work files in $tmp)"
