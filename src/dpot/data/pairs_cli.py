"""``dpot pairs build``: a DTW pair file for two LeRobot datasets (format: :mod:`dpot.data.pairs`).

    dpot pairs build --source ROOT --target ROOT --label state|action [--dims LO:HI] --top-k K
                     [--window W] [--stride S] [--dtw auto|dpot|dtaidistance] --out pair_info.json

Sequences: ``observation.state`` or ``action`` per episode (dims ``[LO, HI)`` of the last axis), read from the
datasets' parquet files (no video decoding), z-scored with stats pooled over both datasets. Episode names in the
file are ``episode_<index:06d>`` (LeRobot episode indices, base 0). The file is written atomically, only once
every pair is computed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dpot.atomic import check_output_location
from dpot.errors import UserError, UserErrorParser

LABEL_KEYS = {"state": "observation.state", "action": "action"}


def read_sequences(root: str | Path, key: str, dims: tuple[int, int] | None, field: str) -> dict[int, np.ndarray]:
    """Episode index -> ``[L, d]`` float64 sequence of column ``key`` (frames in ``frame_index`` order) from a
    LeRobot dataset's ``data/**/*.parquet``; ``dims`` = ``(lo, hi)`` slice of the last axis."""
    import pyarrow.parquet as pq

    files = sorted(Path(root).glob("data/**/*.parquet"))
    if not files:
        raise UserError(f"{field}: {root} has no data/**/*.parquet; give a LeRobot dataset root")
    ep, fi, val = [], [], []
    for f in files:
        names = pq.read_schema(f).names
        if key not in names:
            raise UserError(f"{field}: {root} has no '{key}' column; --label state|action picks it")
        t = pq.read_table(f, columns=["episode_index", "frame_index", key])
        ep.append(t.column("episode_index").to_numpy())
        fi.append(t.column("frame_index").to_numpy())
        val.append(np.stack(t.column(key).to_numpy(zero_copy_only=False)).astype(np.float64))
    ep, fi, x = np.concatenate(ep), np.concatenate(fi), np.concatenate(val)
    if dims is not None:
        lo, hi = dims
        if hi > x.shape[1]:
            raise UserError(f"--dims: {lo}:{hi} is beyond '{key}' of {root} ({x.shape[1]} dims)")
        x = x[:, lo:hi]
    out = {}
    for e in np.unique(ep):
        m = ep == e
        out[int(e)] = x[m][np.argsort(fi[m], kind="stable")]
    return out


def _dims(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--dims: '{text}' is not LO:HI (e.g. 0:7)") from None
    if not 0 <= lo < hi:
        raise UserError(f"--dims: need 0 <= LO < HI, got {text}")
    return lo, hi


def main(argv: list[str], command: str = "pairs") -> int:
    parser = UserErrorParser(prog="dpot pairs", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{build}")
    b = sub.add_parser("build", help="compute a DTW pair file", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--source", required=True, metavar="ROOT", help="the source (sim) LeRobot dataset's root")
    b.add_argument("--target", required=True, metavar="ROOT", help="the target (real) LeRobot dataset's root")
    b.add_argument("--label", choices=sorted(LABEL_KEYS), default="action",
                   help="the sequence DTW aligns: observation.state or action (default: action)")
    b.add_argument("--dims", metavar="LO:HI", help="dims [LO, HI) of the label's last axis (default: all)")
    b.add_argument("--top-k", type=int, required=True, metavar="K",
                   help="keep the K closest source demos of each target episode")
    b.add_argument("--window", type=int, metavar="W", help="Sakoe-Chiba band of W frames (default: none)")
    b.add_argument("--stride", type=int, default=1, metavar="S", help="align every S-th frame (default: 1)")
    b.add_argument("--dtw", choices=["auto", "dpot", "dtaidistance"], default="auto",
                   help="DTW implementation: dtaidistance's C code when installed (auto), or dpot's own")
    b.add_argument("--out", required=True, metavar="FILE", help="the pair file to write (atomically, at the end)")
    args = parser.parse_args(argv)
    from dpot.data.pairs import build_pair_info, dtw_function, write_pair_file, zscore

    if args.top_k < 1:
        raise UserError(f"--top-k: must be >= 1, got {args.top_k}")
    if args.stride < 1 or (args.window is not None and args.window < 0):
        raise UserError("--stride: must be >= 1" if args.stride < 1 else "--window: must be >= 0")
    check_output_location(args.out, "--out", directory=False)   # before the DTW work, not after it
    key, dims = LABEL_KEYS[args.label], _dims(args.dims)
    tgt = read_sequences(args.target, key, dims, "--target")
    src = read_sequences(args.source, key, dims, "--source")
    tgt_z, src_z = zscore(tgt, src)
    dtw = dtw_function(args.dtw)  # imports outside the timed part
    t0 = time.perf_counter()
    info = build_pair_info(tgt_z, src_z, top_k=args.top_k, window=args.window, stride=args.stride, dtw=dtw)
    out = write_pair_file(args.out, info)
    print(f"wrote {out}: {len(info)} target episodes x {min(args.top_k, len(src))} source demos "
          f"({len(tgt) * len(src)} DTW pairs in {time.perf_counter() - t0:.1f} s)")
    return 0
