#!/usr/bin/env bash
# Create .venv with Python 3.12 and install dpot (editable) with its test extras.
# Finds Python 3.12 wherever it is: $PYTHON, a plain python3.12, or pyenv's shim (PYENV_VERSION=3.12.x).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        command -v python3.12; return
    fi
    if command -v pyenv >/dev/null 2>&1; then
        local v
        v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | sort -V | tail -n 1 || true)
        if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python3.12"; return; fi
    fi
    for p in /usr/bin/python3.12 /usr/local/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        if [ -x "$p" ]; then echo "$p"; return; fi
    done
    echo "error: Python 3.12 not found: install it (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12" >&2
    exit 2
}

stamp=.venv/.dpot-installed
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    py=$(find_python)
    echo "[setup] creating .venv with $py"
    rm -rf .venv
    "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing dpot and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip || echo "[setup] warning: could not upgrade pip; going on with $(.venv/bin/python -m pip --version)" >&2
    resume=""   # pip >= 25.1
    if .venv/bin/python -m pip install --help 2>/dev/null | grep -q -- '--resume-retries'; then resume="--resume-retries 20"; fi
    # The CUDA wheels torch pulls in are ~3 GB: a connection cut mid-download is resumed (--resume-retries, where pip
    # has it) and the whole install retried twice more (pip keeps what it already installed), so one bad link does not
    # fail CI.
    for attempt in 1 2 3; do
        # shellcheck disable=SC2086
        if .venv/bin/python -m pip install -q $resume -e ".[test]"; then break; fi
        if [ "$attempt" = 3 ]; then echo "error: setup: pip install failed 3 times (see above); check the network and rerun 'make setup'" >&2; exit 1; fi
        echo "[setup] pip install failed (attempt $attempt of 3); retrying in 30 s" >&2
        sleep 30
    done
    touch "$stamp"
fi
# System libraries (Debian packages), installed when missing:
#   EGL (Mesa) + OSMesa fallback: headless MuJoCo rendering; FFmpeg: LeRobot's video decoding (torchcodec);
#   Chromium: the report test renders the HTML page headless and checks the plots in a screenshot;
#   PostgreSQL: the autopilot test starts its own server (initdb/pg_ctl) to share a search through --storage.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || ! ldconfig -p 2>/dev/null | grep -q 'libOSMesa' \
        || ! ldconfig -p 2>/dev/null | grep -q 'libavutil.so' || ! command -v chromium >/dev/null 2>&1 \
        || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "[setup] installing system packages (EGL, OSMesa, FFmpeg, Chromium, PostgreSQL)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libosmesa6 ffmpeg chromium postgresql >/dev/null) \
            || echo "[setup] warning: could not install system packages; rendering/report tests may fail" >&2
    else
        echo "[setup] warning: install libegl1 libgl1-mesa-dri libosmesa6 ffmpeg chromium postgresql (Debian) for rendering, reports and the autopilot's PostgreSQL test" >&2
    fi
fi
echo "[setup] ready: .venv/bin/dpot"
