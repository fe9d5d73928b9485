"""Which ACT image feature should the OT embed terms use? Cost scale and domain contrast of four candidates.

One ACT (LeRobot's default sizes: ResNet18 without pretrained weights, dim_model 512, 4+1 layers) trained by
``dpot train`` with BC only (``ot.lambda_ot=0``) on the tiny two-domain toy data; at step 0 and after
``--steps`` updates each candidate is taken from the same eval-mode forward on ``--batches`` co-training batches:

- ``layer4``      the backbone's map ``[B, 512, h, w]`` mean-pooled over ``(h, w)``
- ``proj_pool``   ACT's 1x1 input projection of that map ``[B, dim_model, h, w]``, mean-pooled (dpot's choice)
- ``proj_flat``   the projected map flattened ``[B, dim_model * h * w]`` (keeps the layout)
- ``enc_pool``    the transformer encoder's output at the camera's ``h * w`` tokens, mean-pooled

Per candidate: ``D``; ``cross`` = mean source-target cost ``||x_i - y_j||^2 / D`` (the ``ot.cost_norm=dim`` cost
scale, what ``train/ot_cost_mean/img_<cam>`` shows at weight 1); ``within`` = mean within-domain pairwise cost
(``train/ot_embed_spread``); ``contrast`` = ``cross / within`` (> 1: the feature tells the domains apart, so
the OT term has a gap to close).

    .venv/bin/python benchmarks/act_embed_scale.py [--steps 40] [--batches 4] [--batch_size 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch

from dpot.config import load_train_config
from dpot.data.toy import make_toy_dataset
from dpot.ot.costs import sq_euclidean_cost
from dpot.train.batches import prepare_batch
from dpot.train.build import build_run
from dpot.train.loop import train_step

CANDIDATES = ("layer4", "proj_pool", "proj_flat", "enc_pool")


def capture_candidates(policy, batch: dict) -> dict[str, dict[str, torch.Tensor]]:
    """candidate -> camera -> ``[B, D]`` features from one eval-mode forward of ACT on the normalized batch."""
    model, cams = policy.model, list(policy.config.image_features)
    maps, projs, enc = [], [], []
    hooks = [model.backbone.register_forward_hook(lambda _m, _i, o: maps.append(o["feature_map"])),
             model.encoder_img_feat_input_proj.register_forward_hook(lambda _m, _i, o: projs.append(o)),
             model.encoder.register_forward_hook(lambda _m, _i, o: enc.append(o))]
    try:
        with torch.no_grad():
            policy.eval()
            b = dict(batch)
            b["observation.images"] = [batch[k] for k in cams]
            model(b)
    finally:
        for h in hooks:
            h.remove()
    n_1d = 1 + int(policy.config.robot_state_feature is not None) + int(policy.config.env_state_feature is not None)
    hw = projs[0].shape[-2] * projs[0].shape[-1]
    out: dict[str, dict[str, torch.Tensor]] = {c: {} for c in CANDIDATES}
    for i, key in enumerate(cams):
        cam = key.removeprefix("observation.images.")
        out["layer4"][cam] = maps[i].mean((-2, -1))
        out["proj_pool"][cam] = projs[i].mean((-2, -1))
        out["proj_flat"][cam] = projs[i].flatten(1)
        tokens = enc[0][n_1d + i * hw:n_1d + (i + 1) * hw]  # (h*w, B, dim_model)
        out["enc_pool"][cam] = tokens.mean(0)
    return out


def scale_row(src: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
    """``D``, cross-domain and within-domain mean costs (``/ D``) and their ratio."""
    d = src.shape[1]
    cross = float(sq_euclidean_cost(src, tgt).mean()) / d

    def within(x):
        n = x.shape[0]
        return float(sq_euclidean_cost(x, x).sum()) / (n * (n - 1) * d)

    w = 0.5 * (within(src) + within(tgt))
    return {"D": d, "cross": cross, "within": w, "contrast": cross / max(w, 1e-30)}


def measure(run, batches: list[dict]) -> dict[str, dict[str, float]]:
    """candidate -> camera-averaged scale row over ``batches``."""
    acc: dict[str, list[dict[str, float]]] = {c: [] for c in CANDIDATES}
    for batch in batches:
        feats = capture_candidates(run.policy, batch)
        for c in CANDIDATES:
            for f in feats[c].values():
                acc[c].append(scale_row(f[:run.n_src].float(), f[run.n_src:].float()))
    run.policy.train()
    return {c: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} for c, rows in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="BC updates between the two measurements (default 40)")
    ap.add_argument("--batches", type=int, default=4, help="co-training batches measured (default 4)")
    ap.add_argument("--batch_size", type=int, default=16)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="dpot-act-scale-") as tmp:
        root = Path(tmp)
        make_toy_dataset(root / "src", "source", episodes=6, image_size=64, seed=0)
        make_toy_dataset(root / "tgt", "target", episodes=6, image_size=64, seed=0)
        cfg = {"dataset": {"repo_id": "local/toy_target", "root": str(root / "tgt")},
               "source_dataset": {"repo_id": "local/toy_source", "root": str(root / "src")},
               "policy": {"type": "act", "device": "cpu", "push_to_hub": False, "chunk_size": 16,
                          "n_action_steps": 8, "optimizer_lr": 1e-4, "optimizer_lr_backbone": 1e-4},
               "batch_size": args.batch_size, "steps": args.steps, "log_freq": 1000, "save_checkpoint": False,
               "eval_freq": 0, "num_workers": 0, "wandb": {"enable": False}, "seed": 0, "ot": {"lambda_ot": 0.0},
               "output_dir": str(root / "run")}
        (root / "c.json").write_text(json.dumps(cfg))
        run = build_run(load_train_config(root / "c.json"))
        it = iter(run.loader)
        held = [prepare_batch(next(it), run.preprocessor, run.image_keys)[0] for _ in range(args.batches)]
        results = {0: measure(run, held)}
        run.policy.train()
        for step in range(args.steps):
            batch, meta = prepare_batch(next(it), run.preprocessor, run.image_keys)
            train_step(run, batch, meta, step)
        results[args.steps] = measure(run, held)
        run.sinks.close()
    print(f"ACT default sizes, toy data 64 px, 2 cameras, batch {args.batch_size} "
          f"({run.n_src} source + {run.n_tgt} target), {args.batches} batches, cost_norm=dim")
    print("| candidate | D | step | cross (cost scale) | within (spread) | contrast cross/within |")
    print("|---|---|---|---|---|---|")
    for c in CANDIDATES:
        for step, res in results.items():
            r = res[c]
            print(f"| {c} | {r['D']} | {step} | {r['cross']:.3g} | {r['within']:.3g} | {r['contrast']:.2f} |")


if __name__ == "__main__":
    main()
