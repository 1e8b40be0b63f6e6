#!/usr/bin/env bash
# One entry point for a fresh machine (Python >= 3.10, pip, apt):
#   bash tools/dev.sh lab     set up, then open notebooks/00_quickstart.ipynb in JupyterLab
#   bash tools/dev.sh test    set up (plus Chromium for the browser test), then run the whole suite
#   bash tools/dev.sh quick   set up, then the fast tier: no browser, notebook or worker processes
#   bash tools/dev.sh bench   set up, then run every benchmark in benchmarks/
#   bash tools/dev.sh setup   only set up (.venv with the package and its dev extra)
# Extra arguments after `test` go to pytest, after `lab` to JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${FREEZE_WIDGETS_VENV:-.venv}

setup() {
  # FREEZE_WIDGETS_SKIP_SETUP=1 uses the venv as it is (the tests run this script that way).
  if [ "${FREEZE_WIDGETS_SKIP_SETUP:-}" = "1" ] && [ -x "$VENV/bin/python" ]; then return 0; fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  quiet_pip install --upgrade pip
  quiet_pip install -e ".[dev]"
}

quiet_pip() {
  # pip's own failures still fail the script (pipefail); only known noise is filtered out:
  # notices about local package indexes that this machine's pip.conf names but lacks, and
  # setuptools' generic note on editable installs (the build backend inherits PYTHONWARNINGS).
  PYTHONWARNINGS="ignore:Editable installation" "$VENV/bin/python" -m pip --disable-pip-version-check --no-input "$@" --quiet 2>&1 \
    | { grep -v -e "^WARNING: Location '.*' is ignored" || true; }
}

chromium() {
  # The browser test drives Debian's Chromium through Playwright (never `playwright install`).
  if [ -x /usr/bin/chromium ]; then return 0; fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  lab)
    setup
    # Open the quickstart by URL, not as a file argument, so the usual JupyterLab options work
    # (a file argument is refused beside --ServerApp.root_dir / --notebook-dir).
    case " $* " in
      *root_dir*|*notebook-dir*|*notebook_dir*|*default_url*)
        exec "$VENV/bin/python" -m jupyterlab "$@" ;;
      *)
        exec "$VENV/bin/python" -m jupyterlab \
          --LabApp.default_url=/lab/tree/notebooks/00_quickstart.ipynb "$@" ;;
    esac
    ;;
  test)
    setup
    chromium
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  quick)
    setup
    exec "$VENV/bin/python" -m pytest -m "not slow and not browser" "$@"
    ;;
  bench)
    setup
    chromium
    for script in benchmarks/bench_*.py; do
      echo "=== $script"
      "$VENV/bin/python" "$script"
    done
    ;;
  *)
    echo "usage: bash tools/dev.sh lab|test|quick|bench|setup [args]" >&2
    exit 2
    ;;
esac
