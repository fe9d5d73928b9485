"""benchmarks/markdown_section.py: a benchmark's ``--write`` replaces its own section of docs/benchmarks.md and keeps
every other section, the subsections of other sections and the code blocks as they were."""

from __future__ import annotations

import pytest

from benchmarks.markdown_section import find_section, write_section

DOC = """# Benchmarks

## Trainer (dpot train)

old trainer table

```bash
# a shell comment, not a heading
dpot train
```

after the code block

## Autopilot (dpot autopilot)

hand-written prose that must stay

### The grid: best objective per start and method

old grid table

### Reading

a reading written by hand

## Test suite

suite numbers
"""


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "benchmarks.md"
    p.write_text(DOC)
    return p


def test_a_code_block_comment_does_not_end_a_section():
    lines = DOC.splitlines()
    start, end = find_section(lines, "## Trainer (dpot train)")
    assert lines[end] == "## Autopilot (dpot autopilot)" and "after the code block" in lines[start:end]


def test_a_section_is_replaced_and_the_rest_kept(doc):
    write_section(doc, "## Trainer (dpot train)\n\nnew trainer table\n")
    text = doc.read_text()
    assert "new trainer table" in text and "old trainer table" not in text and "after the code block" not in text
    old_section = DOC[DOC.index("## Trainer"):DOC.index("## Autopilot")]
    assert text == DOC.replace(old_section, "## Trainer (dpot train)\n\nnew trainer table\n\n")


def test_a_subsection_is_replaced_up_to_the_next_heading_of_its_level(doc):
    write_section(doc, "### The grid: best objective per start and method\n\nnew grid table\n",
                  parent="## Autopilot (dpot autopilot)")
    text = doc.read_text()
    assert "new grid table" in text and "old grid table" not in text
    for kept in ("hand-written prose that must stay", "### Reading", "a reading written by hand", "suite numbers"):
        assert kept in text
    assert text.index("new grid table") < text.index("### Reading")


def test_a_missing_subsection_goes_at_the_end_of_its_parent(doc):
    write_section(doc, "### New subsection\n\nbody\n", parent="## Autopilot (dpot autopilot)")
    text = doc.read_text()
    assert text.index("a reading written by hand") < text.index("### New subsection") < text.index("## Test suite")
    assert "body\n\n## Test suite" in text


def test_a_missing_section_without_parent_is_appended_and_writing_twice_is_idempotent(doc):
    write_section(doc, "## New\n\nx\n")
    once = doc.read_text()
    assert once.startswith(DOC.rstrip("\n")) and once.endswith("\n\n## New\n\nx\n")
    write_section(doc, "## New\n\nx\n")
    assert doc.read_text() == once


def test_text_that_is_not_a_heading_is_refused(doc):
    with pytest.raises(ValueError, match="not a Markdown heading"):
        write_section(doc, "no heading here\n")
    assert doc.read_text() == DOC
