#!/usr/bin/env bash
# Install everything into ./.venv and run every test: the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The real-browser test (tests/test_browser.py) drives headless Chromium: Debian's chromium and its driver, installed
# once (skipped when present; needs root, as CI has; without them that one test is skipped and says why).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else echo "note: chromium/chromedriver missing and not root: tests/test_browser.py will be skipped"; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0                 # the CPU build; a bare 'torch' would pull a multi-GB CUDA build
pip install -q -e ".[dev]"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_SILENT=true WANDB_MODE=offline HF_HUB_OFFLINE=1 MPLBACKEND=Agg

dirty() { git status --porcelain --untracked-files=all -- . ':!.venv'; }
if [ -d .git ] && [ -n "$(dirty)" ] && [ "${TD_ALLOW_DIRTY:-}" != 1 ]; then
  echo "the work tree is not clean before the checks:"; dirty; exit 1; fi
nbdev_clean
if [ -d .git ] && [ -n "$(dirty)" ]; then
  echo "nbdev_clean changed notebooks: run nbdev_clean and commit"; git status --short; exit 1; fi
nbdev_export
if [ -d .git ] && [ -n "$(dirty)" ]; then
  echo "notebooks and library are not in sync: run nbdev_export and commit"; git status --short; git diff | head -50; exit 1; fi
python scripts/make_readme.py --check

# Each notebook in its own fresh process, two at a time: nbdev_test's worker pool reuses a process for several
# notebooks, and a notebook that registers a part (e.g. @dataset = "coarse") from its own cells would then leak that
# registration into the next notebook of the same worker.
find nbs -name '*.ipynb' ! -path '*/.*' ! -path '*/_*' -print0 | sort -z | xargs -0 -P 2 -n 1 nbdev_test --path
pytest -q tests -m "not cuda" -p no:cacheprovider
