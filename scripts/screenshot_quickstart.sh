#!/usr/bin/env bash
# Dev tool (not run by CI): execute the quickstart tutorial at full length, render it in JupyterLab in headless
# Chromium, and save screenshots under docs/ for the README:
#   docs/quickstart_live_view.png   JupyterLab showing the live view widget (restored from the saved widget state)
#   docs/quickstart_notebook.png    the whole executed notebook, exported to HTML (static pictures, no widgets)
# Needs (dev only, NOT package requirements):  apt-get install -y chromium;  pip install jupyterlab
# Usage (venv active): scripts/screenshot_quickstart.sh     (one to two minutes on a CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
tmp=$(mktemp -d)
# The notebook finds the configs at ../../configs (relative to itself) and writes data, runs and models to
# TD_QUICKSTART_DIR, so a copy two folders down in $tmp/nb runs without touching the repository.
nb=$tmp/nb/tutorials/quickstart/quickstart.ipynb
mkdir -p "$(dirname "$nb")" "$tmp/work" "$tmp/config/labconfig"
ln -s "$repo/configs" "$tmp/nb/configs"
cp nbs/tutorials/quickstart.ipynb "$nb"
export TD_QUICKSTART_DIR="$tmp/work"
unset IN_TEST
jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.store_widget_state=True \
    --ExecutePreprocessor.timeout=900 "$nb"
jupyter trust "$nb"            # JupyterLab restores saved widget state only in a trusted notebook

# 1. The whole notebook as HTML (the `#| hide` cells dropped); the widget's last pictures are plain images in it.
jupyter nbconvert --to html --RegexRemovePreprocessor.patterns='^#\| hide' --output-dir "$tmp/html" "$nb"

# 2. JupyterLab on loopback only, no token, serving the executed copy; the news pop-up off.
echo '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}' > "$tmp/config/labconfig/page_config.json"
JUPYTER_CONFIG_DIR=$tmp/config jupyter lab --no-browser --allow-root --ServerApp.token='' --ServerApp.password='' \
    --ServerApp.ip=127.0.0.1 --port 8899 --ServerApp.root_dir="$tmp/nb" > "$tmp/lab.log" 2>&1 &
lab_pid=$!
chrome_pid=
cleanup() { kill "$lab_pid" 2>/dev/null || true; [ -n "$chrome_pid" ] && kill "$chrome_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 60); do curl -sf http://127.0.0.1:8899/api/status >/dev/null && break; sleep 1; done

CHROME_FLAGS=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
              --disable-component-update --disable-sync --hide-scrollbars)
# The HTML page is static: a plain --screenshot is enough.
chromium "${CHROME_FLAGS[@]}" --user-data-dir="$tmp/chrome-html" --window-size=1400,6000 --virtual-time-budget=20000 \
    --screenshot="$tmp/html.png" "file://$tmp/html/quickstart.html" 2>>"$tmp/chromium.log"

# JupyterLab connects a kernel over a websocket before it restores widgets, which chromium's virtual time does not
# wait for; so drive the browser over the DevTools protocol instead: open the page, wait in real time, scroll the
# widget's cell to the top of the notebook, and capture.
/usr/lib/chromium/chromium "${CHROME_FLAGS[@]}" --user-data-dir="$tmp/chrome-lab" --window-size=1400,1500 \
    --remote-debugging-port=9333 about:blank >>"$tmp/chromium.log" 2>&1 &
chrome_pid=$!
python - 9333 "http://127.0.0.1:8899/lab/tree/tutorials/quickstart/quickstart.ipynb" "$tmp/lab.png" <<'PY'
import base64, json, sys, time, urllib.request
import websocket                      # websocket-client, installed with jupyterlab
port, url, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(100):
    try: pages = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json')); break
    except OSError: time.sleep(0.2)
ws = websocket.create_connection([p for p in pages if p['type'] == 'page'][0]['webSocketDebuggerUrl'], suppress_origin=True)
ids = iter(range(1, 10**6))
def call(method, **params):
    i = next(ids); ws.send(json.dumps({'id': i, 'method': method, 'params': params}))
    while True:
        m = json.loads(ws.recv())
        if m.get('id') == i: return m.get('result', m)
call('Page.navigate', url=url)
time.sleep(15)
# a widget restored from saved state has no kernel side; hide ipywidgets' "disconnected" marks for the picture
find = """(async () => {
  const st = document.createElement('style');
  st.textContent = '.jupyter-widgets-disconnected::before { display: none !important; }';
  document.head.appendChild(st);
  const s = document.querySelector('.jp-WindowedPanel-outer');
  for (let y = 0; y < s.scrollHeight; y += 400) {
    s.scrollTop = y; await new Promise(r => setTimeout(r, 300));
    const w = document.querySelector('.jp-OutputArea-output .widget-vbox');
    if (w) { const c = w.closest('.jp-Cell'); s.scrollTop += c.getBoundingClientRect().top - s.getBoundingClientRect().top - 10; return true; }
  }
  return false; })()"""
r = call('Runtime.evaluate', expression=find, awaitPromise=True, returnByValue=True)
if not r.get('result', {}).get('value'): sys.exit(f'no live view widget rendered in JupyterLab: {r}')
time.sleep(2)
open(out, 'wb').write(base64.b64decode(call('Page.captureScreenshot', format='png')['data']))
PY
cleanup; trap - EXIT

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
shrink "$tmp/lab.png" docs/quickstart_live_view.png
shrink "$tmp/html.png" docs/quickstart_notebook.png
echo "wrote docs/quickstart_live_view.png and docs/quickstart_notebook.png (work files in $tmp)"
