#!/usr/bin/env bash
# GPU readiness check of dpot in one command (issue 12, item 3); results as JSON + Markdown in $OUT (or --out).
#
#   bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget-s S] [--checks a,b] [--work DIR]
#       set up Python, run benchmarks/gpu_check.py, write DIR/gpu_check.{json,md,log}. Without CUDA (or with
#       --dry-run) it is a dry run: tiny sizes on the CPU and one 'NEEDS CUDA: <check>: <what>' line per check
#       with a CUDA part. S: stop starting checks after S seconds (default 480 with CUDA, 1800 dry). With CUDA a
#       hard 'timeout' ends the checks 530 s after this script started (wheel install included), so the
#       command stays under 9 minutes; the JSON is rewritten after every check, so a cut run keeps its numbers.
#   bash scripts/gpu_check.sh --prepare
#       HERE, where pip and apt work, in the repo root: download what the bare GPU machine lacks, in two parts
#       that each fit one call's 64 MiB: .whl1/ (lerobot, av, datasets, diffusers, pandas, ... 62 MB: training),
#       .whl2/ (metaworld, mujoco, PyOpenGL, glfw ~47 MB: simulation) and .gl/ (EGL/GL loader .debs), all
#       git-ignored via .git/info/exclude. Call 1 carries .whl1 and runs the training checks; call 2, at once
#       (the machine stays warm 30 s; /tmp/dpot-site survives on it), carries .whl2 + .gl and runs the MetaWorld
#       checks. docs/multi-gpu.md, "Running scripts/gpu_check.sh", has both calls.
#   bash scripts/gpu_check.sh --install-only
#       install the carried .whl1/.whl2 wheels into /tmp/dpot-site and stop.
#
# Python there, first found: $PYTHON; .venv/bin/python (a carried venv); the image's python3 (torch+CUDA,
# accelerate, numpy, pandas, pyarrow, opencv, ...) plus /tmp/dpot-site (wheels installed with pip --target,
# no index, no deps). scripts/setup.sh cannot build a venv there: nothing can be downloaded on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh

# What a full dry run imports (modules recorded in every process, mapped to distributions) minus what the GPU
# image already has (torch 2.11, torchvision 0.26, accelerate 1.15, huggingface_hub, safetensors, numpy, pyarrow,
# pillow, opencv, einops, scipy, matplotlib, pyyaml, requests, tqdm, typing-inspect, ...: the device KINDS.md),
# at the versions `pip install lerobot[training,diffusion]==0.6.1 metaworld==3.1.1` resolves (.venv, 2026-11-25).
# pandas 2.3.3 travels because lerobot 0.6.1 needs pandas < 3 and the image's pandas is newer or unknown;
# torchcodec does not (it needs FFmpeg's shared libraries; LeRobot falls back to PyAV).
WHEELS1=(
    lerobot==0.6.1 av==15.1.0 datasets==4.8.5 diffusers==0.39.0 draccus==0.11.6 dill==0.4.1 multiprocess==0.70.19
    gymnasium==1.4.0 Farama-Notifications==0.0.6 termcolor==3.3.0 mergedeep==1.3.4 toml==0.10.2 jsonlines==4.0.0
    importlib_metadata==10.2.0 pandas==2.3.3 pytz==2026.6 tzdata==2026.6
)
WHEELS2=(metaworld==3.1.1 mujoco==3.3.0 glfw==2.11.0 PyOpenGL==3.1.10)
GL_DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

prepare() {
    local py=${PYTHON:-python3} d exclude
    exclude="$(git rev-parse --git-common-dir)/info/exclude"  # .git is a file in a worktree
    mkdir -p "$(dirname "$exclude")"
    for d in .whl1 .whl2 .gl; do
        grep -qxF "/$d/" "$exclude" 2>/dev/null || echo "/$d/" >>"$exclude"
        mkdir -p "$d"
    done
    local pf=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
    "$py" -m pip download -q "${pf[@]}" -d .whl1 "${WHEELS1[@]}"
    "$py" -m pip download -q "${pf[@]}" -d .whl2 "${WHEELS2[@]}"
    local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    mkdir -p /tmp/amd64/partial
    apt-get "${o[@]}" update -qq && (cd .gl && apt-get "${o[@]}" download "${GL_DEBS[@]}")
    du -sh .whl1 .whl2 .gl
    echo "prepared: call 1 carries [\".whl1\"], call 2 carries [\".whl2\", \".gl\"] (docs/multi-gpu.md)"
}

args=()
DRY=0
INSTALL_ONLY=0
OUT_DIR=${OUT:-outputs/gpu_check}
BUDGET=
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) prepare; exit 0 ;;
        --install-only) INSTALL_ONLY=1 ;;
        --dry-run) DRY=1; args+=(--dry-run) ;;
        --out) OUT_DIR=$2; shift ;;
        --budget-s) BUDGET=$2; shift ;;
        --checks|--work) args+=("$1" "$2"); shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "error: gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
: >"$LOG"
say() { echo "[gpu_check.sh] $*" | tee -a "$LOG"; }

gpu_render_env
gpu_setup_gl  # EGL/GL loaders carried as .debs: the device README's recipe

gpu_select_python  # sets PY (scripts/gpu_env.sh)
if [ "$INSTALL_ONLY" = 1 ]; then
    say "install only: $(find "$GPU_SITE" -maxdepth 1 -name '*.dist-info' 2>/dev/null | wc -l) packages in $GPU_SITE"
    exit 0
fi
gpu_require_imports "torch, lerobot, draccus, dpot.train.loop" "run 'bash scripts/gpu_check.sh --prepare' where pip \
works and carry .whl1 then .whl2 (docs/multi-gpu.md, 'Running scripts/gpu_check.sh')"
if [ "$DRY" = 0 ] && ! gpu_has_cuda; then
    say "no CUDA device: dry run (tiny sizes on the CPU)"
    DRY=1
    args+=(--dry-run)
fi
if [ "$DRY" = 1 ]; then
    HARD=$(( ${BUDGET:-1800} + 120 ))
else
    HARD=$(( 530 - SECONDS ))  # SECONDS: since this script started (the wheel install counts)
    [ "$HARD" -ge 120 ] || HARD=120
fi
if [ -z "$BUDGET" ] || [ "${BUDGET%.*}" -gt $((HARD - 40)) ]; then
    if [ "$DRY" = 1 ] && [ -z "$BUDGET" ]; then BUDGET=1800; else BUDGET=$((HARD - 40)); fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee -a "$LOG" || true

say "python $("$PY" -c 'import sys; print(sys.version.split()[0])') at $(command -v "$PY"), budget ${BUDGET} s," \
    "hard limit ${HARD} s"
set +e
timeout --kill-after=10 "$HARD" "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --budget-s "$BUDGET" \
    ${args[@]+"${args[@]}"} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    say "error: stopped at the hard limit ($HARD s); partial results in $OUT_DIR"
fi
say "exit $rc; $OUT_DIR/gpu_check.json, $OUT_DIR/gpu_check.md, $LOG"
exit "$rc"
