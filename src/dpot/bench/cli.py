"""``dpot bench <subcommand>``: generate | eval | gap | study (the ``SUBCOMMANDS`` table is open for more).

Each subcommand is a pair (add_arguments(parser), run(args) -> exit code) registered in ``SUBCOMMANDS``;
bad input raises ``dpot.errors.UserError`` (the ``dpot`` dispatcher prints one ``error:`` line, exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from dpot.bench.env import DEFAULT_CAMERAS, OBS_MODES, REGIONS, check_layout, check_obs, check_region
from dpot.errors import UserError, UserErrorParser, did_you_mean
from dpot.rundir import MODEL_DIR


def _cameras(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _domain(args) -> str:
    return args.domain_spec if getattr(args, "domain_spec", None) else args.domain


# ------------------------------------------------------------------ generate
_DOMAINS_HELP = "source | target (visual + dynamics shift) | target-visual (camera pose + table texture)"
_REGION_HELP = (f"{' | '.join(REGIONS)}: the half of the task's layout range to draw layouts in "
                "(id = lower half of the split coordinate, e.g. button x < 0; see docs/benchmarks.md)")


_LAYOUT_HELP = ("dpot | lerobot: observation.images.<camera> (dpot) or LeRobot's MetaWorld env layout "
                "(observation.image from its corner2 view at 480 px, 4-d state, fps 80)")


def _generate_args(p):
    p.add_argument("--task", required=True)
    p.add_argument("--domain", default="source", help=_DOMAINS_HELP + "; see --domain-spec")
    p.add_argument("--domain-spec", help="JSON domain spec file (overrides --domain)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--out", required=True, help="dataset folder (LeRobotDataset v3)")
    p.add_argument("--image-size", type=int, default=None, help="default 96 (--layout lerobot: 480, LeRobot's)")
    p.add_argument("--cameras", type=_cameras, default=None,
                   help=f"comma-separated, default {','.join(DEFAULT_CAMERAS)} (--layout lerobot: LeRobot's corner2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.05, help="std of the Gaussian action noise")
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--video", action="store_true", help="store images as mp4 video instead of PNG")
    p.add_argument("--workers", type=int, default=1, help="rollout processes")
    p.add_argument("--overwrite", action="store_true", help="replace a dpot bench dataset already at --out")
    p.add_argument("--obs", type=check_obs, default=None,
                   help=f"{' | '.join(OBS_MODES)}: observation.state = hand xyz + gripper (proprio, 4-d) "
                        "or + goal xyz (full, 7-d; default; --layout lerobot: proprio)")
    p.add_argument("--region", type=check_region, default="all", help=_REGION_HELP + "; default all")
    p.add_argument("--layout", type=check_layout, default="dpot", help=_LAYOUT_HELP + "; default dpot")
    p.add_argument("--full-render", action="store_true",
                   help="MetaWorld's default render quality (--layout lerobot: pixel-identical to LeRobot's env; "
                        "8x slower than the default fast settings)")



def _generate(args) -> int:
    from dpot.bench.generate import generate_dataset

    lerobot = args.layout == "lerobot"
    if lerobot and args.cameras is not None:
        raise UserError("--cameras: the lerobot layout has LeRobot's one camera (corner2); leave --cameras out")
    s = generate_dataset(args.task, _domain(args), args.episodes, args.out,
                         image_size=args.image_size or (480 if lerobot else 96),
                         cameras=args.cameras or DEFAULT_CAMERAS, seed=args.seed, noise=args.noise,
                         max_steps=args.max_steps, use_videos=args.video, workers=args.workers,
                         overwrite=args.overwrite, obs=args.obs or ("proprio" if lerobot else "full"),
                         region=args.region, layout=args.layout, fast_render=not args.full_render)
    print(f"{'reused' if s.get('reused') else 'wrote'} {s['out']}: {s['episodes']} episodes, {s['frames']} frames; "
          f"expert success {s['episodes']}/{s['attempts']} = {s['expert_success_rate']:.2f}; "
          f"{s['seconds']:.1f} s ({s['episodes_per_s']:.2f} episodes/s)")
    return 0


# ------------------------------------------------------------------ eval
def _eval_args(p):
    p.add_argument("--policy", required=True, help=f"a {MODEL_DIR}/ folder (or a checkpoint folder holding one)")
    p.add_argument("--task", required=True)
    p.add_argument("--domain", default="target", help=_DOMAINS_HELP + "; default target")
    p.add_argument("--domain-spec", help="JSON domain spec file (overrides --domain)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=None, help="first episode seed (default 100000)")
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count, max 8)")
    p.add_argument("--device", default=None)
    p.add_argument("--gif-dir", default=None, help="save the first --gifs rollouts as GIFs here")
    p.add_argument("--gifs", type=int, default=3)
    p.add_argument("--out", default=None, help="write the result as JSON")
    p.add_argument("--obs", type=check_obs, default=None,
                   help="proprio | full; default: the policy's own (from its observation.state shape); "
                        "a different value is an error")
    p.add_argument("--region", type=check_region, default="all", help=_REGION_HELP + "; default all")
    p.add_argument("--layout", type=check_layout, default=None,
                   help="dpot | lerobot; default: the policy's own (observation.image input = lerobot); "
                        "a different value is an error")


def _eval(args) -> int:
    from dpot.bench.evaluate import EVAL_SEED, evaluate_policy

    r = evaluate_policy(args.policy, args.task, _domain(args), args.episodes,
                        EVAL_SEED if args.seed is None else args.seed, max_steps=args.max_steps,
                        workers=args.workers, device=args.device, gif_dir=args.gif_dir, gifs=args.gifs, out=args.out,
                        obs=args.obs, region=args.region, layout=args.layout)
    lo, hi = r["ci95"]
    print(f"{r['task']} [{r['domain']}, region {r['region']}]: success {r['successes']}/{r['episodes']} = "
          f"{r['success_rate']:.2f} "
          f"(95% CI {lo:.2f}-{hi:.2f}), mean length {r['mean_length']:.1f}, {r['seconds']:.1f} s")
    if args.out is None:
        print(json.dumps({k: v for k, v in r.items() if k != "episodes_detail"}))
    return 0


# ------------------------------------------------------------------ gap
def _gap_args(p):
    p.add_argument("--task", required=True)
    p.add_argument("--out", default="docs/domain_gap.png")
    p.add_argument("--source", default="source", help="preset name or JSON spec file")
    p.add_argument("--target", default="target", help="preset name or JSON spec file")
    p.add_argument("--cameras", type=_cameras, default=(*DEFAULT_CAMERAS, "topview"))
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)


def _gap(args) -> int:
    from dpot.bench.gap import write_gap_png

    path = write_gap_png(args.task, args.out, source=args.source, target=args.target, cameras=args.cameras,
                         image_size=args.image_size, seed=args.seed)
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------ study (defined in dpot.bench.study)
def _study_args(p):
    from dpot.bench.study.cli import add_arguments

    add_arguments(p)


def _study(args) -> int:
    from dpot.bench.study.cli import run_cli

    return run_cli(args)


SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "generate": ("scripted-expert episodes -> LeRobotDataset", _generate_args, _generate),
    "eval": ("closed-loop success rate of a trained policy", _eval_args, _eval),
    "gap": ("PNG of source vs target views per camera", _gap_args, _gap),
    "study": ("sim->real co-training study: train and evaluate the methods, write a results table",
              _study_args, _study),
}


def register(name: str, help_: str, add_arguments: Callable, run: Callable) -> None:
    """Add a subcommand (e.g. ``study``) to ``dpot bench``."""
    SUBCOMMANDS[name] = (help_, add_arguments, run)


def main(argv: list[str] | None = None, command: str = "bench") -> int:
    """``dpot bench`` entry point; returns the exit code."""
    parser = UserErrorParser(prog=f"dpot {command}", description="two-domain MetaWorld benchmark")
    sub = parser.add_subparsers(dest="sub", parser_class=UserErrorParser)
    for name, (help_, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_, description=help_))
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in SUBCOMMANDS:
        raise UserError(f"dpot {command}: unknown subcommand '{argv[0]}'{did_you_mean(argv[0], SUBCOMMANDS)}; "
                        f"choose from {', '.join(SUBCOMMANDS)}")
    args = parser.parse_args(argv)
    return int(SUBCOMMANDS[args.sub][2](args) or 0)

