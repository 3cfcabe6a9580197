from __future__ import annotations

import io
import json
import time

import pytest

from anysync.cli import common
from anysync.cli.progress import JsonProgress, Progress
from anysync.client.progress import NullReporter, Reporter, human_bytes


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_clears_the_line() -> None:
    out = _Tty()
    p = Progress("backup", out)
    p._last = -1.0  # draw at the first update
    p.add(files=3, nbytes=5 * 1024 * 1024)
    text = out.getvalue()
    assert "backup: 3 files, 5.0 MiB" in text and "/s" in text
    p.done()
    assert out.getvalue().endswith("\r")


def test_progress_is_silent_when_piped() -> None:
    out = io.StringIO()
    p = Progress("restore", out)
    for _ in range(5):
        p.add(files=1, nbytes=100)
        time.sleep(0.01)
    p.done()
    assert out.getvalue() == ""
    assert (p.files, p.bytes) == (5, 500)


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_the_terminal_line_and_the_null_reporter_are_reporters() -> None:
    reporters: list[Reporter] = [Progress("backup", io.StringIO()), NullReporter()]
    for r in reporters:
        r.add(files=1, nbytes=1)
        r.done()


def test_with_a_total_the_line_shows_the_share_and_the_time_left() -> None:
    p = Progress("backup", _Tty())
    p.total(100, 1000 * 1024 * 1024)
    p._start = 100.0
    p.add(files=25, nbytes=250 * 1024 * 1024)
    line = p.line(now=130.0)  # a quarter in 30 s: 90 s to go
    assert "25/100 files" in line and "250.0 MiB/1000.0 MiB (25%)" in line
    assert line.endswith("1:30 left")
    p.total(100, 0)  # nothing to read: done, not a division by zero
    assert "(100%)" in p.line(now=131.0)


def test_a_warning_or_an_error_clears_the_line_first(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _Tty()
    monkeypatch.setattr("sys.stderr", out)
    p = Progress("restore", out)
    p._last = -1.0
    p.add(files=1, nbytes=10)
    common.print_warning("a skipped old snapshot")
    text = out.getvalue()
    drawn = text.index("restore: 1 files")
    blanked = text.index("\r" + " " * 10, drawn)  # the line overwritten with spaces
    assert drawn < blanked < text.index("warning: a skipped old snapshot")
    p.done()


def test_json_progress_writes_lines_a_script_can_read() -> None:
    out = io.StringIO()  # not a terminal: JSON lines are for pipes
    p = JsonProgress("backup", out)
    p.total(4, 4000)
    p._last = -10.0  # the next update writes a line
    p.add(files=1, nbytes=1000)
    p.add(files=3, nbytes=3000)  # within the second: no line
    p.done()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["files"], d.get("done", False)) for d in lines] == [(1, False), (4, True)]
    assert lines[0]["percent"] == 25.0 and lines[0]["total_bytes"] == 4000
    assert "seconds_left" in lines[0] and "seconds_left" not in lines[1]
