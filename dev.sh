#!/usr/bin/env bash
# One door into the project on a fresh machine (Python 3.11+ and pip are enough):
#   ./dev.sh demo     the main job, end to end, on embedded defaults
#   ./dev.sh test     the whole test suite
#   ./dev.sh ARGS...  any `propensity` subcommand
# The first run creates .venv from requirements.lock (exact versions); later runs reuse it
# until the lock or pyproject.toml changes. It takes minutes (pyspark and mlflow are large):
# a line at least every 10 seconds says which step it is on and how far it got.
set -euo pipefail
cd "$(dirname "$0")"
venv="${PROPENSITY_VENV:-.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"

# step TITLE COMMAND...: run COMMAND with its output in a log, and every 10 s print how long
# it has run and pip's latest step (with how many of the lock's packages it has reached);
# on failure, the log's end. pip's own output is a screenful a package, or silence with -q.
step() {
  local title="$1" log start pid last n rc shown
  shift
  log="$(mktemp)"
  start=$SECONDS
  echo "dev.sh: $title..." >&2
  "$@" >"$log" 2>&1 &
  pid=$!
  shown=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    # by the clock, not by counting sleeps: on a busy machine ten `sleep 1` take longer
    if [ $((SECONDS - shown)) -ge 8 ] && kill -0 "$pid" 2>/dev/null; then
      shown=$SECONDS
      # a package from an index is "Collecting", one from a local wheel "Processing"
      n=$(grep -c -E '^(Collecting|Processing) ' "$log" || true)
      last=$(grep -E '^ *(Collecting|Processing|Downloading|Installing|Building|Successfully)' "$log" \
             | tail -n 1 | sed -e 's/^ *//' -e 's/ (from .*//' -e 's|^Processing .*/|Processing |' \
             | cut -c1-90 || true)
      case "$last" in
        Installing*) last="installing the $n packages (unpacking the wheels)" ;;
        ?*) last="$last ($n of $packages packages collected)" ;;
      esac
      echo "dev.sh:   $((SECONDS - start))s ${last:-working}" >&2
    fi
  done
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$log" >&2
    echo "dev.sh: $title failed (exit $rc); the lines above are its end" >&2
    rm -f "$log"
    exit 1
  fi
  grep -v -e "^WARNING: Location" -e "^Requirement already satisfied" "$log" \
    | grep -E "^(WARNING|ERROR)" >&2 || true
  echo "dev.sh: $title: done in $((SECONDS - start))s" >&2
  rm -f "$log"
}

if [ ! -f "$stamp" ]; then
  packages=$(grep -c '==' requirements.lock)
  echo "dev.sh: setting up $venv (first run, or the lock changed): $packages packages" >&2
  step "creating $venv" "$py" -m venv "$venv"
  step "installing $packages packages from requirements.lock" \
    "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    -r requirements.lock
  step "installing propensity itself (editable)" \
    "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    --no-deps -e .
  "$venv/bin/python" -c "import propensity, lightgbm, pandera" \
    || { echo "dev.sh: installing into $venv failed" >&2; exit 1; }
  rm -f "$venv"/.lock-*
  touch "$stamp"
fi
case "${1:-}" in
  # on every core: whole files to a worker (tests/conftest.py); `./dev.sh test -n 0` runs serially
  test) shift; exec "$venv/bin/python" -m pytest -n auto --dist loadfile "$@" ;;
  demo) shift; exec "$venv/bin/propensity" demo "$@" ;;
  "") exec "$venv/bin/propensity" --help ;;
  *) exec "$venv/bin/propensity" "$@" ;;
esac
