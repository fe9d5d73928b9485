"""Usage errors of every ``dpot`` command (missing, unknown or mistyped arguments): one ``error: dpot <command>: ...``
line on stderr, exit 2, no usage block; ``--help`` still prints and exits 0 (dpot.errors.UserErrorParser)."""

from __future__ import annotations

import pytest

from dpot.cli import main


@pytest.mark.parametrize("argv, expected", [
    (["pairs"], "error: dpot pairs: the following arguments are required: {build}"),
    (["pairs", "build"], "error: dpot pairs build: the following arguments are required: --source, --target, "
                         "--top-k, --out"),
    (["pairs", "build", "--source", "a", "--target", "b", "--top-k", "x", "--out", "o"],
     "error: dpot pairs build: argument --top-k: invalid int value: 'x'"),
    (["config", "convert", "in.json"], "error: dpot config convert: the following arguments are required: output"),
    (["config", "nope"], "error: dpot config: argument {convert}: invalid choice: 'nope'"),
    (["autopilot", "--out", "o"], "error: dpot autopilot: the following arguments are required: --config_path"),
    (["bench", "eval", "--bogus"], "error: dpot bench eval: "),
    (["compare"], "error: dpot compare: the following arguments are required: RUN"),
])
def test_a_usage_error_is_one_line_and_exit_2(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err
    assert "usage:" not in captured.err + captured.out
    assert list(tmp_path.iterdir()) == []                                   # nothing written


def test_help_still_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pairs", "build", "--help"])
    assert exc.value.code == 0 and "--top-k" in capsys.readouterr().out
