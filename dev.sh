#!/usr/bin/env bash
# One door into the project on a fresh machine (Python 3.11+ and pip are enough):
#   ./dev.sh demo     the main job, end to end, on embedded defaults
#   ./dev.sh test     the whole test suite
#   ./dev.sh ARGS...  any `propensity` subcommand
# The first run creates .venv from requirements.lock (exact versions); later runs reuse it
# until the lock or pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"
venv="${PROPENSITY_VENV:-.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (first run, or the lock changed)..." >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -c "import propensity, lightgbm, pandera" \
    || { echo "dev.sh: installing into $venv failed" >&2; exit 1; }
  rm -f "$venv"/.lock-*
  touch "$stamp"
fi
case "${1:-}" in
  test) shift; exec "$venv/bin/python" -m pytest "$@" ;;
  demo) shift; exec "$venv/bin/propensity" demo "$@" ;;
  "") exec "$venv/bin/propensity" --help ;;
  *) exec "$venv/bin/propensity" "$@" ;;
esac
