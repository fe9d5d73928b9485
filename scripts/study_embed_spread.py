"""Learned camera embeddings of study checkpoints, measured offline on the same frames.

    .venv/bin/python scripts/study_embed_spread.py RUN [RUN ...] > out.json     (e.g. naive-cotrain-seed0 dp-ot-seed0)

For each run's checkpoints at steps 300 and 600 (cpu-small) and each camera: within-domain spread (mean
off-diagonal ||x_i - x_k||^2 / D, as ``train/ot_embed_spread``), cross-domain cost (mean ||x_i - y_j||^2 / D,
the image term of the OT cost before weights) and the mean squared entry (scale), on 48 fixed random source and
48 target frames. It answers what the training logs cannot: the logs have no OT metrics at lambda_ot=0, so only
this tells whether the embeddings shrink without the OT loss too.
"""
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from dpot.bench.evaluate import _load  # noqa: E402
from dpot.data.frames import FrameReader  # noqa: E402
from dpot.policy.diffusion import diffusion_loss_with_features  # noqa: E402

S = Path("outputs/study/cpu-small-button-press-topdown-v3")  # the study directory
cams = ["observation.images.corner4", "observation.images.gripperPOV"]
keys = cams + ["observation.state", "action"]
delta = {"action": [i / 10 for i in range(16)], "observation.state": [0.0], **{c: [0.0] for c in cams}}


def frames(dom, n=48):
    root = S / "data" / f"button-press-topdown-v3_{dom}"
    ds = LeRobotDataset("x", root=root, delta_timestamps=delta, return_uint8=True)
    fr = FrameReader(ds, keys)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(ds), (n,), generator=g).tolist()
    items = [fr[i] for i in idx]
    return {k: torch.stack([it[k] for it in items]) for k in [*keys, "action_is_pad"]}




B = {d: frames(d) for d in ("source", "target")}


def pd(x, y):  # mean ||x_i - y_j||^2 / D
    return (torch.cdist(x, y) ** 2).mean().item() / x.shape[1]


def spread(x):
    d = torch.cdist(x, x) ** 2
    n = len(x)
    return (d.sum() / (n * (n - 1))).item() / x.shape[1]


out = {}
for run in sys.argv[1:]:
    for step in ("000300", "000600"):
        p = S / "runs" / run / "checkpoints" / step / "pretrained_model"
        policy, pre, post = _load(p, "cpu")
        policy.eval()
        emb = {}
        with torch.no_grad():
            for d, b in B.items():
                o = diffusion_loss_with_features(policy, pre(dict(b)))
                emb[d] = o.embeds
        r = {}
        for cam in emb["source"]:
            xs, xt = emb["source"][cam], emb["target"][cam]
            r[cam] = {"spread_src": spread(xs), "spread_tgt": spread(xt), "cross": pd(xs, xt),
                      "norm2": (xs.pow(2).mean().item() + xt.pow(2).mean().item()) / 2}
        out[f"{run}@{int(step)}"] = r
        print(run, step, {c: {k: f"{v:.2e}" for k, v in r[c].items()} for c in r}, file=sys.stderr, flush=True)
print(json.dumps(out, indent=1))
