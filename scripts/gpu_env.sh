# Shared set-up of the bare GPU machine for scripts/gpu_check.sh and scripts/gpu_study.sh (source it, do not run).
# The caller defines say() (one log line) and LOG (pip's output goes there) before calling these functions.
#
#   gpu_setup_gl      unpack the carried EGL/GL loader .debs (.gl/, GPU machine only) and point EGL at NVIDIA's
#   gpu_select_python set PY: $PYTHON; .venv/bin/python (a carried venv); else the image's python3 plus the
#                     carried .whl1/.whl2 wheels, installed into $GPU_SITE (pip --target, no index, no deps;
#                     /tmp/dpot-site survives between calls while the machine stays warm) and put on PYTHONPATH
#   gpu_render_env    the rendering/offline environment variables every dpot run there needs
GPU_SITE=/tmp/dpot-site

gpu_render_env() {
    export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} HF_HUB_OFFLINE=1 \
        WANDB_SILENT=true TOKENIZERS_PARALLELISM=false HF_DATASETS_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
}

gpu_setup_gl() {
    local f
    if compgen -G ".gl/*.deb" >/dev/null && [ "$(id -u)" = 0 ] && command -v nvidia-smi >/dev/null; then
        say "unpacking $(find .gl -name '*.deb' | wc -l) GL loader packages from .gl/"
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ -d /usr/local/nvidia/share/glvnd/egl_vendor.d ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
}

gpu_wheel_files() {
    local d
    for d in .whl1 .whl2; do
        [ -d "$d" ] && find "$d" -maxdepth 1 -name '*.whl'
    done
    return 0
}

gpu_install_wheels() {
    local files t0
    files=$(gpu_wheel_files)
    [ -n "$files" ] || return 0
    say "installing $(echo "$files" | wc -l) carried wheels into $GPU_SITE (no index, no deps)"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # word splitting of the file list is intended (wheel names have no spaces)
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$GPU_SITE" \
            $files >>"$LOG" 2>&1; then
        say "error: pip could not install the carried wheels into $GPU_SITE (python3 is $(python3 -V 2>&1); they" \
            "are for CPython 3.12 x86_64); pip's output is in $LOG"
        tail -n 3 "$LOG" >&2
        exit 2
    fi
    say "wheels installed in $(( $(date +%s) - t0 )) s"
}

# gpu_require_imports "torch, lerobot, ..." "hint": $PY (after gpu_select_python) must import the modules with
# the repo's src on PYTHONPATH, else one `error:` line with the hint, the import error's tail, exit 2.
gpu_require_imports() {
    export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
    if ! "$PY" -c "import $1" >>"$LOG" 2>&1; then
        say "error: $PY cannot import $1: $2; import error in $LOG"
        tail -n 5 "$LOG" >&2
        exit 2
    fi
}

# gpu_has_cuda: exit status 0 when $PY's torch sees a CUDA device.
gpu_has_cuda() {
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'
}

gpu_select_python() {
    if [ -n "${PYTHON:-}" ]; then
        PY=$PYTHON
    elif [ -x .venv/bin/python ]; then
        PY=.venv/bin/python
    else
        PY=python3
        gpu_install_wheels
        if [ -d "$GPU_SITE" ]; then export PYTHONPATH=$GPU_SITE${PYTHONPATH:+:$PYTHONPATH}; fi
    fi
}
