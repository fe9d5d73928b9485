#!/usr/bin/env bash
# The v4 contrast (naive-cotrain vs dp-ot-faithful, issue 31) on one lent GPU in one command; results into $OUT (or
# --out). --preset gpu-idood-powered --methods naive-cotrain,dp-ot-official: v3's primary contrast;
# --preset gpu-idood --methods target-only,naive-cotrain,dp-ot-paper: v2's core; --task drawer-open-v3: the second
# task (default: the preset's first).
#
#   bash scripts/gpu_study.sh [--dry-run] [--preset P] [--methods a,b,c] [--task T] [--seeds N] [--out DIR] [--work DIR]
#                             [--budget-s S] [--gen-workers N]
#       1. generate the study's source and target datasets with `dpot bench generate --workers` (settings from the
#          preset, so the study reuses them; nothing is carried), 2. run one `dpot bench study --only <method>`
#          sitting per method side by side (training on the GPU, evaluation in the preset's eval_workers processes
#          per sitting on the CPU cores), 3. rewrite results.json from every finished job (`--max-jobs 0`) and
#          write what the run tool can bring back (<= 8 files): DIR/gpu_study.log (nvidia-smi line, phase times,
#          each run's last checkpoint and step time, every finished evaluation), DIR/results.json, DIR/curves.png
#          and DIR/study.tar.gz (results.md, study.json, done/, evals/, configs/, logs/, script_logs/ = this
#          script's generate/sitting logs, runs/*/metrics.jsonl + ot_terms.json; no data, no checkpoints).
#          A job counts in results.json only once fully trained and evaluated (the study's done marker).
#       Defaults: preset gpu-idood-v4 (cpu-idood's protocol, 96 px, batch 64, 3000 steps, 200 episodes per
#       target cell and 50 source on the new layouts; dp-ot-faithful's pair file is written by its sitting),
#       methods naive-cotrain,dp-ot-faithful, seeds 1, work dir
#       /tmp/dpot-gpu-study (survives between calls while the machine stays warm), device cuda. The time estimates
#       below were measured with v2's preset (50 episodes per cell): four times the target episodes need a third
#       call. --dry-run (or no CUDA): preset micro-v4 on the CPU
#       in a fresh work dir under DIR (tests/study/test_gpu_study_dryrun.py runs it; ~1-2 min on 2 cores).
#   Time guard: S (default 530 s from this script's start, wheel install included, so the command ends inside the
#       run tool's 9-10 minutes) is a hard end: the sittings get `timeout` at S - 25 s minus what generation used,
#       the last 25 s rewrite results.json from the jobs that finished and copy everything out. A sitting cut by
#       the guard loses at most save_every (1000) steps: the next call with the same --work continues it.
#   Measured on one H200 (2026-11-26, before the final evaluations moved ahead of the curve points): install 3 s,
#       generation 86 s, then in 408 s target-only reached step 3000 and the co-training runs step 2000 (curve
#       evaluations included); a second call of 239 s took all to 3000 and target-only through its ID/OOD
#       evaluations. So one full seed needs two study calls (docs/multi-gpu.md has the three-call recipe).
#
# On the lent machine (docs/multi-gpu.md, "Running scripts/gpu_check.sh": the wheels do not fit one call's 64 MiB;
# run `bash scripts/gpu_check.sh --prepare` here first). Two `run` tool calls, the second at once (warm machine):
#   1. command "bash scripts/gpu_check.sh --install-only", carry [".whl1"], timeout_s 120
#   2. command "bash scripts/gpu_study.sh --out $OUT", carry [".whl2", ".gl"], timeout_s 560
# A third call "bash scripts/gpu_study.sh --out $OUT --budget-s S" (same carry, timeout_s S + 30) continues cut
# jobs from their checkpoints while the machine is warm (else it starts over from step 0).
set -euo pipefail
START=$SECONDS
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh

DRY=0
PRESET=
METHODS=naive-cotrain,dp-ot-faithful
SEEDS=1
TASK=
OUT_DIR=${OUT:-outputs/gpu_study}
WORK=
BUDGET=530
GEN_WORKERS=
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --preset) PRESET=$2; shift ;;
        --methods) METHODS=$2; shift ;;
        --task) TASK=$2; shift ;;
        --seeds) SEEDS=$2; shift ;;
        --out) OUT_DIR=$2; shift ;;
        --work) WORK=$2; shift ;;
        --budget-s) BUDGET=$2; shift ;;
        --gen-workers) GEN_WORKERS=$2; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "error: gpu_study.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG=$OUT_DIR/gpu_study.log
LOGS=$OUT_DIR/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
: >"$LOG"
say() { echo "[gpu_study.sh $((SECONDS - START)) s] $*" | tee -a "$LOG"; }

gpu_render_env
gpu_setup_gl
gpu_select_python
gpu_require_imports "torch, lerobot, metaworld, dpot.bench.study" "carry .whl1 in a first call (bash \
scripts/gpu_check.sh --install-only) and .whl2 + .gl in this one (see --help)"
if [ "$DRY" = 0 ] && ! gpu_has_cuda; then
    say "no CUDA device: dry run (preset micro-v4 on the CPU)"
    DRY=1
fi
if [ "$DRY" = 1 ]; then
    PRESET=${PRESET:-micro-v4}
    DEVICE=cpu
    WORK=${WORK:-$OUT_DIR/work}
    GEN_WORKERS=${GEN_WORKERS:-1}
else
    PRESET=${PRESET:-gpu-idood-v4}
    DEVICE=cuda
    WORK=${WORK:-/tmp/dpot-gpu-study}
    GEN_WORKERS=${GEN_WORKERS:-14}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG" || true
fi
mkdir -p "$WORK"
say "preset $PRESET, methods $METHODS, seeds $SEEDS, device $DEVICE, work $WORK, out $OUT_DIR, hard end ${BUDGET} s"

# 1. the datasets, with the study's own settings (so its sittings reuse them), source and target side by side
mapfile -t GEN < <("$PY" - "$PRESET" "$WORK" "$TASK" <<'EOF'
import sys

from dpot.bench.presets import DATA_SEEDS
from dpot.bench.study import make_study

s = make_study(sys.argv[1], root=sys.argv[2], task=sys.argv[3] or None, progress=False)
p = s.preset
for role, n, region in (("source", p.source_episodes, p.source_region), ("target", p.target_episodes,
                                                                           p.target_region)):
    print(f"--task {s.task} --domain {s.domain(role)} --episodes {n} --out {s.root}/data/{s.task}_{role} "
          f"--image-size {p.image_size} --cameras {','.join(p.cameras)} --seed {DATA_SEEDS[role]} --obs {p.obs} "
          f"--region {region}")
EOF
)
T0=$SECONDS
pids=()
# source data is 10x the target data: most of the rollout processes go to it
for i in 0 1; do
    w=$(( i == 0 ? GEN_WORKERS * 3 / 4 : GEN_WORKERS / 4 )); [ "$w" -ge 1 ] || w=1
    # shellcheck disable=SC2086  # the generated argument line has no spaces inside an argument
    "$PY" -m dpot bench generate ${GEN[$i]} --workers "$w" >"$LOGS/generate_$i.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do
    if ! wait "$p"; then
        say "error: dataset generation failed; see $LOGS/generate_*.log"
        tail -n 3 "$LOGS"/generate_*.log >&2
        exit 1
    fi
done
say "datasets ready in $((SECONDS - T0)) s: $(tail -qn 1 "$LOGS"/generate_*.log | tr '\n' ' ')"

# 2. one sitting per method, side by side, under the time guard
GUARD=$(( BUDGET - (SECONDS - START) - 25 ))
[ "$GUARD" -ge 30 ] || GUARD=30
say "sittings: ${METHODS//,/ } side by side, guard ${GUARD} s"
T0=$SECONDS
pids=()
IFS=, read -r -a MLIST <<<"$METHODS"
for m in "${MLIST[@]}"; do
    timeout --kill-after=5 "$GUARD" "$PY" -m dpot bench study --preset "$PRESET" --dir "$WORK" --only "$m" \
        --seeds "$SEEDS" --device "$DEVICE" ${TASK:+--task "$TASK"} >"$LOGS/sitting_$m.log" 2>&1 &
    pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
    set +e
    wait "${pids[$i]}"
    r=$?
    set -e
    if [ "$r" = 124 ] || [ "$r" = 137 ]; then
        say "sitting ${MLIST[$i]}: stopped by the time guard (resumable with the same --work)"
        rc=3
    elif [ "$r" != 0 ]; then
        say "sitting ${MLIST[$i]}: exit $r; see $LOGS/sitting_${MLIST[$i]}.log"
        tail -n 3 "$LOGS/sitting_${MLIST[$i]}.log" >&2
        rc=1
    fi
done
say "sittings ended after $((SECONDS - T0)) s"

# 3. results of every finished job, the steps each job reached, the small outputs to $OUT
"$PY" -m dpot bench study --preset "$PRESET" --dir "$WORK" --only "$METHODS" --seeds "$SEEDS" --max-jobs 0 \
    ${TASK:+--task "$TASK"} \
    >>"$LOG" 2>&1 || say "warning: results.json could not be rewritten (see $LOG)"
for run in "$WORK"/runs/*/; do
    [ -d "$run" ] || continue
    say "job $("$PY" -m dpot.bench.study.progress "$run" 2>&1 || true)"
done
# every finished evaluation, also of a job the guard cut before its done marker (those are not in results.json)
"$PY" -m dpot.bench.study.progress --evals "$WORK/evals" 2>&1 | tee -a "$LOG" || true
# The run tool returns at most 8 files, 2 folders down: results.json, curves.png and this log travel as files,
# everything else small (the study's done/, evals/, configs/, logs/, each run's metrics.jsonl and ot_terms.json,
# this script's generate/sitting logs) as one archive, study.tar.gz; no data, no checkpoints.
for f in results.json curves.png; do
    if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$OUT_DIR/"; fi
done
mkdir -p "$WORK/script_logs"
cp "$LOGS"/*.log "$WORK/script_logs/" 2>/dev/null || true
parts=()
for f in results.json results.md curves.png study.json done evals configs logs script_logs; do
    if [ -e "$WORK/$f" ]; then parts+=("$f"); fi
done
for f in "$WORK"/runs/*/metrics.jsonl "$WORK"/runs/*/ot_terms.json; do
    if [ -f "$f" ]; then parts+=("${f#"$WORK"/}"); fi
done
tar -czf "$OUT_DIR/study.tar.gz" -C "$WORK" "${parts[@]}"
rm -rf "$LOGS"
if [ -f "$OUT_DIR/results.json" ]; then
    "$PY" - "$OUT_DIR/results.json" <<'EOF' | tee -a "$LOG"
import json
import sys

r = json.load(open(sys.argv[1]))
for name, m in r.get("methods", {}).items():
    cells = "  ".join(f"{c} {d.get('successes')}/{d.get('episodes')}" for c, d in m.get("domains", {}).items())
    print(f"  {name}: {cells}")
EOF
fi
say "exit $rc; results in $OUT_DIR (results.json, curves.png, study.tar.gz), log $LOG"
exit "$rc"
