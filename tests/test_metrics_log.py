"""The metrics.jsonl writer, reader and resume cut-back (dpot.metrics_log): one format, read the same everywhere."""

import subprocess
import sys

import pytest

from dpot.errors import UserError
from dpot.metrics_log import METRICS_FILE, JsonlSink, load_metrics, read_metrics, truncate_metrics


def _write(tmp_path, text: str):
    (tmp_path / METRICS_FILE).write_text(text)
    return tmp_path


def test_sink_round_trip_keeps_non_finite_values_as_strings(tmp_path):
    sink = JsonlSink(tmp_path / METRICS_FILE)
    sink.log(1, {"train/loss": 0.5, "train/ot_loss": float("nan")})
    sink.log(2, {"train/loss": float("inf")})
    sink.close()
    assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 0.5, "train/ot_loss": "nan"},
                                      {"step": 2, "train/loss": "inf"}]
    assert read_metrics(tmp_path / METRICS_FILE) == read_metrics(tmp_path)   # the file itself or its run dir


def test_torn_last_line_is_dropped_and_flagged_in_both_modes(tmp_path):
    _write(tmp_path, '{"step": 1, "a": 1.0}\n{"step": 2, "a": 0.')
    for strict in (False, True):
        log = load_metrics(tmp_path, strict=strict)
        assert log.rows == [{"step": 1, "a": 1.0}] and log.torn_tail
    assert not load_metrics(_write(tmp_path, '{"step": 1}\n\n')).torn_tail


def test_damaged_middle_line_is_skipped_when_lenient_and_an_error_when_strict(tmp_path):
    _write(tmp_path, '{"step": 1}\n{"step": 2, "a"\n{"a": 3}\n{"step": 4}\n')
    log = load_metrics(tmp_path)
    assert [r["step"] for r in log.rows] == [1, 4] and not log.torn_tail
    with pytest.raises(UserError, match="line 2 is not JSON"):
        load_metrics(tmp_path, strict=True)
    _write(tmp_path, '{"step": 1}\n{"a": 3}\n{"step": 4}\n')
    with pytest.raises(UserError, match="line 2 has no 'step'"):
        load_metrics(tmp_path, strict=True)


def test_absent_file_reads_as_empty(tmp_path):
    assert read_metrics(tmp_path) == [] and load_metrics(tmp_path, strict=True).rows == []


def test_truncate_drops_steps_after_the_checkpoint_and_a_torn_tail(tmp_path):
    kept = '{"step": 1, "a": 1.0}\n{"step": 2, "a": "nan"}\n'
    _write(tmp_path, kept + '{"step": 3, "a": 3.0}\n{"step": 4, "a": 4.')
    truncate_metrics(tmp_path, 2)
    assert (tmp_path / METRICS_FILE).read_text() == kept      # kept lines byte-identical: resume appends after them
    truncate_metrics(tmp_path / "absent", 2)                   # nothing to cut: no file is made
    assert not (tmp_path / "absent").exists()


def test_reader_module_does_not_import_torch():
    code = "import sys, dpot.metrics_log; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
