"""The fault-point switch: parsing, and that an armed point really kills the process."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from anysync import faults


def test_parse() -> None:
    assert faults._parse(None) is None
    assert faults._parse("") is None
    assert faults._parse("sync.apply-file") == ("sync.apply-file", 1, signal.SIGKILL)
    assert faults._parse("sync.apply-file:3") == ("sync.apply-file", 3, signal.SIGKILL)
    assert faults._parse("backup.packs-done@stop") == ("backup.packs-done", 1, signal.SIGSTOP)
    assert faults._parse("sync.apply-file:2@stop") == ("sync.apply-file", 2, signal.SIGSTOP)
    with pytest.raises(ValueError, match="unknown fault point"):
        faults._parse("sync.no-such-point")
    with pytest.raises(ValueError, match="at least 1"):
        faults._parse("sync.apply-file:0")


def test_unarmed_point_does_nothing() -> None:
    faults.point("sync.apply-file")  # the test process has no fault armed


def test_armed_point_kills_at_the_given_count() -> None:
    code = (
        "from anysync import faults\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    faults.point('sync.apply-file')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={faults.ENV: "sync.apply-file:3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["0", "1", "2"]
