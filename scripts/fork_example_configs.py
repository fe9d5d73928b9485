"""Write the seed report's iterations (configs/iter*.json, dpot's keys) as the LeRobot OT fork's files, for a
dataset's camera names: the worked example of docs/coming-from-the-fork.md.

    python scripts/fork_example_configs.py --cameras corner4,gripperPOV --dim_slice 0,4 --out DIR

Each dpot file becomes the fork's layout: ``source_dataset`` -> ``ot.src_repo_id`` / ``ot.src_root``, the ``ot``
keys of the plan into ``ot.loss_config``, the embed term (all cameras, weight w) into one fork feature per camera
(weight w / n_cameras, ``term_name`` ``img_<cam>``), the label term into an ``action`` feature (``action_lbl``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAMES = ("seed_p80qgmx9", "iter1", "iter4a", "iter4b", "iter5a", "iter5b", "iter5c")


def to_fork(cfg: dict, cameras: list[str], dim_slice: list[int] | None) -> dict:
    """One dpot config (raw JSON) in the fork's format."""
    cfg = json.loads(json.dumps(cfg))
    src = cfg.pop("source_dataset")
    cfg.pop("camera_map", None)
    cfg.pop("eval", None)
    ot = cfg.pop("ot")
    features = []
    for feat in ot.pop("features"):
        if feat.get("type", "embed") == "embed":
            w = feat.get("weight_embed", 1.0) / len(cameras)
            features += [{"src_key": f"observation.images.{c}", "tgt_key": f"observation.images.{c}",
                          "use_learned_embed": feat.get("use_learned_embed", True), "weight_embed": round(w, 4),
                          "weight_label": 0.0, "term_name": f"img_{c}"} for c in cameras]
        else:
            features.append({"src_key": feat["key"], "tgt_key": feat["key"],
                             "dim_slice": dim_slice if dim_slice is not None else feat.get("dim_slice"),
                             "use_learned_embed": False, "embed_name": None, "weight_embed": 0.0,
                             "weight_label": feat["weight_label"], "term_name": f"{feat['key']}_lbl"})
    cfg["ot"] = {"enable": True, "src_repo_id": src["repo_id"], "src_root": src["root"], "pair_info_path": None,
                 "batch_ratio": ot.pop("batch_ratio", 0.5), "lambda_ot": ot.pop("lambda_ot", 0.1),
                 "obs_keys": [f"observation.images.{c}" for c in cameras], "base_index_src": 0, "base_index_tgt": 0,
                 "window_size": ot.pop("window_size", 20),
                 "loss_config": {"features": features, **{k: ot.pop(k) for k in ("reg", "tau_src", "tau_tgt",
                                                                                  "heuristic") if k in ot}}}
    if ot:
        raise SystemExit(f"no fork key for {sorted(ot)}")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--dim_slice", default=None, help="LO,HI of the action label (default: the config's)")
    ap.add_argument("--configs", default=str(Path(__file__).resolve().parents[1] / "configs"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cams = [c.strip() for c in a.cameras.split(",") if c.strip()]
    ds = [int(v) for v in a.dim_slice.split(",")] if a.dim_slice else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        cfg = to_fork(json.loads((Path(a.configs) / f"{name}.json").read_text()), cams, ds)
        (out / f"diffusion_fr3_ot_{name}.json").write_text(json.dumps(cfg, indent=2) + "\n")
        print(out / f"diffusion_fr3_ot_{name}.json")


if __name__ == "__main__":
    main()
