"""dpot.bench.fingerprint: the same generation gives the same fingerprint; a change in a frame value moves the
frames' hash only, a change in an image the images' hash only."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from dpot.bench.fingerprint import dataset_fingerprint
from dpot.data.toy import make_toy_dataset


def _rewrite(root, column, change):
    (path,) = sorted((root / "data").rglob("*.parquet"))
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[0] = change(values[0])
    i = table.column_names.index(column)
    pq.write_table(table.set_column(i, table.field(i), pa.array(values, type=table.field(i).type)), path)


def test_same_generation_same_fingerprint_and_each_part_moves_alone(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_toy_dataset(a, episodes=2, image_size=8, seed=3)
    make_toy_dataset(b, episodes=2, image_size=8, seed=3)
    fa = dataset_fingerprint(a)
    assert fa == dataset_fingerprint(b) and fa["frames"] and fa["images"] and fa["files"] >= 1
    assert dataset_fingerprint(tmp_path / "missing") == {"frames": None, "images": None, "files": 0}

    c = tmp_path / "c"
    shutil.copytree(a, c)
    _rewrite(c, "action", lambda v: [v[0] + 1e-6, *v[1:]])          # one float, one frame
    fc = dataset_fingerprint(c)
    assert fc["frames"] != fa["frames"] and fc["images"] == fa["images"]

    d = tmp_path / "d"
    shutil.copytree(a, d)
    image = next(n for n in pq.read_table(next((d / "data").rglob("*.parquet"))).column_names
                 if n.startswith("observation.images"))
    _rewrite(d, image, lambda v: {**v, "bytes": v["bytes"][:-1] + bytes([v["bytes"][-1] ^ 1])})
    fd = dataset_fingerprint(d)
    assert fd["images"] != fa["images"] and fd["frames"] == fa["frames"]
