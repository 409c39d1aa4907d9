#!/usr/bin/env bash
# What a new user does on a fresh clone, in this order, each step timed (CI runs exactly this, see .ci/run):
#   1. the README's install-and-main-job line (its first bash block, read from README.md now, so it follows edits),
#      then a check of the files the README says it leaves;
#   2. the quickstart notebook, executed headless into a temporary folder (the committed notebook stays unchanged,
#      the work tree clean: its outputs go to the ignored data/ and runs/ folders);
#   3. the README's test command (its second bash block: bash scripts/test.sh, which reuses step 1's .venv).
# Any failure stops the sequence with the step's name and its exit status.
#   TD_SKIP_TESTS=1   run steps 1 and 2 only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
# one thread per process, as scripts/test.sh sets it: torch's default (a thread per core) made training ~10x slower
# on a 2-core machine with other load; a dedicated machine loses little with 1 thread for these small models
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

# The README's bash blocks, in order (a block is the lines between ```bash and the next ```).
block() { "$PY" - "$1" <<'EOF'
import re, sys
blocks = re.findall(r'^```bash[ \t]*\n(.*?)^```', open('README.md', encoding='utf-8').read(), re.M | re.S)
n = int(sys.argv[1])
if len(blocks) <= n: sys.exit(f"README.md has {len(blocks)} bash blocks; expected at least {n + 1}")
print(blocks[n].strip())
EOF
}
MAIN_JOB=$(block 0)
TESTS=$(block 1)
grep -Eq '(^|[;&|[:space:]])(\.|source) \.venv/bin/activate' <<<"$MAIN_JOB" \
  || { echo "fresh_clone: README's first bash block does not activate .venv (expected '. .venv/bin/activate'):"; echo "$MAIN_JOB"; exit 1; }
[ -e .venv ] && echo "note: .venv exists already (not a fresh clone): step 1 reuses it"

TIMES=()
step() {   # step NAME COMMAND...: header, run, wall time; stop on failure
  local name=$1 t0 rc=0; shift
  echo; echo "=== fresh_clone: $name ==="
  t0=$(date +%s)
  "$@" || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ "$rc" != 0 ]; then echo "fresh_clone: step '$name' FAILED (exit $rc) after ${dt} s"; exit "$rc"; fi
  echo "=== fresh_clone: $name: ok in ${dt} s ==="
  TIMES+=("$(printf '%5d s  %s' "$dt" "$name")")
}

main_job() {
  echo "+ $MAIN_JOB"
  bash -e -c "$MAIN_JOB" || return
  # The files the README promises: the run's checkpoints and sample pictures, the exported model, the generated terrain.
  .venv/bin/python - <<'EOF'
import json, sys
from pathlib import Path
import numpy as np, tifffile
bad = [p for p in ['runs/quickstart_terrain/latest_checkpoint', 'runs/quickstart_model/config.json',
                   'runs/quickstart_model/model.safetensors', 'runs/quickstart_model/export.json',
                   'runs/terrain/hillshade.png', 'runs/terrain/elevation.tif', 'runs/terrain/elevation.npy'] if not Path(p).exists()]
if not list(Path('runs/quickstart_terrain/samples').glob('*.png')): bad.append('runs/quickstart_terrain/samples/*.png')
if bad: sys.exit(f"the main job did not leave {', '.join(bad)}")
z, t = np.load('runs/terrain/elevation.npy'), tifffile.imread('runs/terrain/elevation.tif')
is_png = Path('runs/terrain/hillshade.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
same = t.shape == z.shape and np.array_equal(np.asarray(t, z.dtype), z)
if not (z.shape == (256, 256) and np.isfinite(z).all() and z.std() > 0 and same and is_png):
    sys.exit(f"runs/terrain/: elevation.npy {z.shape} (all finite: {np.isfinite(z).all()}), elevation.tif {t.shape} "
             f"(equal to the .npy: {same}), hillshade.png a PNG: {is_png}")
json.loads(Path('runs/quickstart_model/export.json').read_text())
print(f"outputs ok: runs/terrain/ elevation.npy {z.shape} {z.min():.0f}..{z.max():.0f} m, elevation.tif (the same), hillshade.png; "
      f"runs/quickstart_terrain/ checkpoints and samples; runs/quickstart_model/")
EOF
}

dirty() { git status --porcelain --untracked-files=all 2>/dev/null || true; }
quickstart() {
  # shellcheck disable=SC1091
  . .venv/bin/activate || return
  .venv/bin/python -c "import nbconvert, nbclient, ipykernel" 2>/dev/null \
    || { echo "nbconvert/nbclient/ipykernel are not installed by the README's line (the notebooks extra)"; return 1; }
  local nb=nbs/tutorials/quickstart.ipynb out before after
  out=$(mktemp -d "${TMPDIR:-/tmp}/td_fresh_clone.XXXXXX") || return
  before=$(sha256sum "$nb"); local dirty_before; dirty_before=$(dirty)
  echo "+ jupyter nbconvert --to notebook --execute $nb --output-dir $out"
  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=3600 "$nb" --output-dir "$out" || return
  after=$(sha256sum "$nb")
  [ "$before" = "$after" ] || { echo "$nb changed while it was executed"; return 1; }
  if [ "$(dirty)" != "$dirty_before" ]; then echo "executing $nb left files git sees:"; dirty; return 1; fi
  echo "executed copy: $out/quickstart.ipynb (the committed notebook and the work tree are unchanged)"
}

tests() { echo "+ $TESTS"; bash -e -c "$TESTS"; }   # (set -e does not hold inside a step: each command returns on failure)

step "1/3 README install-and-main-job line" main_job
step "2/3 quickstart notebook, headless" quickstart
if [ "${TD_SKIP_TESTS:-}" = 1 ]; then echo; echo "fresh_clone: TD_SKIP_TESTS=1: step 3 (the README's test command) skipped"
else step "3/3 README test command" tests; fi

echo; echo "fresh_clone: all steps passed"; printf '%s\n' "${TIMES[@]}"
