"""Per-episode regions of a dataset (``id`` / ``ood`` halves of a task's initial positions) and the source
episodes that may partner each target episode in paired-region OT.

``dpot bench generate`` records per-episode info in ``<root>/meta/dpot_bench.json`` under
``"episodes": [{"episode_index": int, "region": "id" | "ood", ...}, ...]``; datasets made otherwise have none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from dpot.errors import UserError

META_FILE = "meta/dpot_bench.json"


def episode_regions(root: str | Path) -> dict[int, str] | None:
    """``{episode_index: region}`` from ``<root>/meta/dpot_bench.json`` ``"episodes"``; None when the file or
    its ``"episodes"`` list is absent (no region info). Raises ``ValueError`` when the file is unreadable or an
    entry lacks an int ``episode_index`` or a str ``region``."""
    path = Path(root) / META_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    episodes = doc.get("episodes") if isinstance(doc, dict) else None
    if episodes is None:
        return None
    if not isinstance(episodes, list):
        raise ValueError(f"{path}: 'episodes' is {type(episodes).__name__}, expected a list")
    out: dict[int, str] = {}
    for i, entry in enumerate(episodes):
        ep = entry.get("episode_index") if isinstance(entry, dict) else None
        region = entry.get("region") if isinstance(entry, dict) else None
        if isinstance(ep, bool) or not isinstance(ep, int) or not isinstance(region, str):
            raise ValueError(f"{path}: episodes[{i}] needs an int 'episode_index' and a str 'region'")
        out[ep] = region
    return out


def region_partners(tgt_episodes: Iterable[int], src_episodes: Iterable[int], tgt_regions: dict[int, str] | None,
                    src_regions: dict[int, str] | None) -> dict[int, list[int]]:
    """``{target episode: sorted source episodes of the same region}`` for paired-region OT.

    Raises ``UserError("ot.paired_region: ...")`` when either dataset has no region info, an episode has no
    region, or a target episode's region has no source episode.
    """
    for name, regions in (("target dataset", tgt_regions), ("source_dataset", src_regions)):
        if regions is None:
            raise UserError(f"ot.paired_region: the {name} records no per-episode regions ({META_FILE} "
                            "'episodes'); generate it with `dpot bench generate` or set ot.paired_region=false")
    src_episodes, tgt_episodes = [int(e) for e in src_episodes], [int(e) for e in tgt_episodes]
    for name, eps, regions in (("target dataset", tgt_episodes, tgt_regions),
                               ("source_dataset", src_episodes, src_regions)):
        missing = [e for e in eps if e not in regions]
        if missing:
            raise UserError(f"ot.paired_region: the {name} has no region for episodes {missing[:5]}"
                            f"{' ...' if len(missing) > 5 else ''} in {META_FILE}; regenerate it or set "
                            "ot.paired_region=false")
    by_region: dict[str, list[int]] = {}
    for e in sorted(src_episodes):
        by_region.setdefault(src_regions[e], []).append(e)
    out = {}
    for e in tgt_episodes:
        region = tgt_regions[e]
        if region not in by_region:
            raise UserError(f"ot.paired_region: target episode {e} is in region '{region}' but no source episode "
                            f"is (source regions: {sorted(by_region)}); give source data of every target region "
                            "or set ot.paired_region=false")
        out[e] = list(by_region[region])
    return out


__all__ = ["META_FILE", "episode_regions", "region_partners"]
