"""``dpot probe``: the domain probe of a run's checkpoints (:mod:`dpot.train.domain_probe`).

    dpot probe RUN [--steps 0,500,1500] [--frames 256] [--out FILE]

For each step, the policy of that checkpoint (``--steps`` default: 0 and every checkpoint of the run; step 0 is the
run's initial weights, rebuilt from its saved config and seed exactly as ``dpot train`` built them) encodes
``--frames`` fit and as many held-out frames of the run's own source and target datasets (episodes split in
halves, balanced), and a linear classifier's held-out sim-vs-real accuracy is printed per camera with its 95 %
interval. Written: ``RUN/domain_probe.json`` (or ``--out``) ``{"steps": {"<step>": {"<camera>": {"accuracy",
"ci95", "n_test", "n_fit"}}}, "frames", "seed"}``, merged with the steps already in the file.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from dpot import atomic, rundir
from dpot.errors import UserError, UserErrorParser

PROBE_FILE = "domain_probe.json"


def _steps(text: str | None, run: Path) -> list[int]:
    if text is None:
        return [0] + [s for s in rundir.checkpoint_steps(run) if s > 0]
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--steps: '{text}' is not a comma-separated list of steps (e.g. 0,500,1500)") from None
    have = set(rundir.checkpoint_steps(run)) | {0}
    missing = [s for s in steps if s not in have]
    if missing:
        raise UserError(f"--steps: no checkpoint of step {missing[0]} in {run} (it has "
                        f"{sorted(have) or 'none'}); step 0 is the initial weights")
    return steps


def probe_run(run: Path, steps: list[int], *, frames: int = 256) -> dict[int, dict]:
    """Step -> camera -> :meth:`ProbeResult.as_dict` for the run's checkpoints (step 0: its initial weights)."""
    from lerobot.policies.factory import get_policy_class

    from dpot.config import load_train_config
    from dpot.data.cotrain import EpisodeTable
    from dpot.policy import get_hook
    from dpot.train.batches import prepare_eval_batch
    from dpot.train.build import build_policy, open_cotrain_dataset
    from dpot.train.domain_probe import domain_probe
    from dpot.train.inputs import check_inputs

    cfg = load_train_config(rundir.config_path(run))
    cfg.policy.device = "cpu"
    inputs = check_inputs(cfg)
    seed = int(cfg.seed or 0)
    parts = build_policy(cfg, inputs)   # the run's initial weights: what build_run made at step 0
    dataset, _, _ = open_cotrain_dataset(cfg, inputs, parts)
    val = set(cfg.eval.val_episodes or [])
    tgt_table = EpisodeTable.from_meta(inputs.tgt_meta)
    tgt_table = tgt_table.subset([e for e in tgt_table.episode.tolist() if e not in val])
    src_table = EpisodeTable.from_meta(inputs.src_meta)
    prepare = functools.partial(prepare_eval_batch, preprocessor=parts.preprocessor, image_keys=parts.image_keys)
    hook = get_hook(cfg.policy.type)
    out = {}
    for step in steps:
        if step == 0:
            policy = parts.policy
        else:
            model = rundir.checkpoint_dir(run, step, cfg.steps) / rundir.MODEL_DIR
            policy = get_policy_class(cfg.policy.type).from_pretrained(str(model))
        res = domain_probe(policy, hook, dataset, src_table, tgt_table, prepare, n=frames, seed=seed)
        out[step] = {cam: r.as_dict() for cam, r in res.items()}
    return out


def main(argv: list[str], command: str = "probe") -> int:
    parser = UserErrorParser(prog="dpot probe", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN",
                        help=f"a dpot run directory ({rundir.CONFIG_FILE}, {rundir.CHECKPOINTS_DIR}/)")
    parser.add_argument("--steps", default=None, help="comma-separated steps (default: 0 and every checkpoint)")
    parser.add_argument("--frames", type=int, default=256, help="fit frames (as many held out; default 256)")
    parser.add_argument("--out", default=None, help=f"JSON file (default RUN/{PROBE_FILE})")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not rundir.config_path(run).is_file():
        raise UserError(f"RUN: {run} has no {rundir.config_path(run).name}; give a dpot run directory")
    if args.frames < 4:
        raise UserError(f"--frames: must be >= 4, got {args.frames}")
    steps = _steps(args.steps, run)
    out = Path(args.out) if args.out else run / PROBE_FILE
    atomic.check_output_location(out, "--out", directory=False)
    res = probe_run(run, steps, frames=args.frames)
    old = json.loads(out.read_text()) if out.is_file() else {}
    merged = {**old.get("steps", {}), **{str(s): v for s, v in res.items()}}
    atomic.write_text(out, json.dumps({"frames": args.frames, "steps": dict(sorted(merged.items(),
                                                                                      key=lambda kv: int(kv[0])))},
                                      indent=1) + "\n")
    for step, cams in res.items():
        line = "  ".join(f"{cam} {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
                         for cam, r in cams.items())
        print(f"step {step}: {line}")
    print(f"wrote {out}")
    return 0
