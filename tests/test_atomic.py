"""Atomic writes: whole file or the old one, the permissions a plain open() gives, no temp files left."""

import os

import pytest

from dpot.atomic import write_bytes, write_text


def test_atomic_write_has_open_permissions_and_leaves_no_temp(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a" / "r.json", "{}")
        assert path.read_text() == "{}" and (path.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (write_text(tmp_path / "b.json", "x").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.json", "r.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_text(tmp_path / "r.txt", "old")
    with pytest.raises(TypeError):
        write_bytes(path, "not bytes")  # type: ignore[arg-type]  # fails inside the temp file's write
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]
