#!/usr/bin/env bash
# One entry point for a fresh machine (Python >= 3.10, pip, apt):
#   bash tools/dev.sh lab     set up, then open notebooks/00_quickstart.ipynb in JupyterLab
#   bash tools/dev.sh test    set up (plus Chromium for the browser test), then run the whole suite
#   bash tools/dev.sh bench   set up, then run every benchmark in benchmarks/
#   bash tools/dev.sh setup   only set up (.venv with the package and its dev extra)
# Extra arguments after `test` go to pytest, after `lab` to JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${FREEZE_WIDGETS_VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
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
    exec "$VENV/bin/python" -m jupyterlab notebooks/00_quickstart.ipynb "$@"
    ;;
  test)
    setup
    chromium
    exec "$VENV/bin/python" -m pytest "$@"
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
    echo "usage: bash tools/dev.sh lab|test|bench|setup [args]" >&2
    exit 2
    ;;
esac
