"""Write one section of a Markdown file (docs/benchmarks.md) and leave the rest as it is.

A section is a heading line (``#`` × level, a space, a title) and everything after it up to the next heading of the
same or a higher level (fewer or equal ``#``), or the end of the file. Lines inside fenced code blocks (```` ``` ````)
are never headings, so a shell comment in a code block does not end a section. The benchmarks that write their
numbers into docs/benchmarks.md (``--write``) all go through :func:`write_section`.
"""

from __future__ import annotations

import re
from pathlib import Path

from dpot.atomic import write_text

_HEADING = re.compile(r"^(#{1,6}) \S")


def heading_level(line: str) -> int:
    """The level of a Markdown heading line (``## Foo`` -> 2), or 0 for any other line."""
    m = _HEADING.match(line)
    return len(m.group(1)) if m else 0


def find_section(lines: list[str], heading: str) -> tuple[int, int] | None:
    """``(start, end)`` line indices of the section whose heading line is exactly ``heading`` (``end`` exclusive:
    the next heading of level <= its own outside code fences, or ``len(lines)``), or None when there is none."""
    level = heading_level(heading)
    if not level:
        raise ValueError(f"not a Markdown heading: {heading!r}")
    start, fenced = None, False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if start is None:
            if line.rstrip() == heading:
                start = i
        elif 0 < heading_level(line) <= level:
            return start, i
    return None if start is None else (start, len(lines))


def write_section(path: Path, text: str, parent: str | None = None) -> None:
    """Replace the section of ``path`` whose heading is ``text``'s first line by ``text``; everything else is
    kept (blank lines around the section become one). When the file has no such section, ``text`` goes at the end
    of the section ``parent`` (a heading line) if given and present, else at the end of the file. The file is
    written atomically."""
    heading = text.splitlines()[0].rstrip()
    old = Path(path).read_text() if Path(path).exists() else ""
    lines = old.splitlines()
    block = text.rstrip("\n").splitlines()
    span = find_section(lines, heading)
    if span is None and parent is not None:
        outer = find_section(lines, parent)
        if outer is not None:
            span = (outer[1], outer[1])
    if span is None:
        span = (len(lines), len(lines))
    start, end = span
    before, after = lines[:start], lines[end:]
    while before and not before[-1].strip():
        before.pop()
    new = before + ([""] if before else []) + block + ([""] + after if after else [])
    write_text(path, "\n".join(new) + "\n")
