"""Atomic file writes (temp file in the same directory + rename): nothing half-written on error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dpot.errors import UserError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask would set it briefly)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with the permissions ``open()`` would give (0666 & ~umask; the
    temp file alone would be 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def check_output_location(path: str | Path, field: str, *, directory: bool) -> Path:
    """Check, before any work, that ``path`` can be written: raise ``UserError`` (``<field>: ...``) when it (a
    directory when ``directory``, else a file) names something of the other kind, when a part of its parent path
    is a regular file, or when the nearest existing parent is not writable. Creates nothing."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a file" if directory else "a directory"
        raise UserError(f"{field}: {path} is {kind}; give a {'directory' if directory else 'file'} path")
    parent = path.parent if not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{field}: {path} lies under {parent}, which is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{field}: cannot write under {parent} (permission denied); choose a writable location")
    return path
