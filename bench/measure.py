"""Run commands and measure them: wall time, CPU time, peak RSS of the process tree.

CPU time of a command comes from wait4() (the command and every descendant it reaped).
Processes that outlive a step (the AnySync server) are "watched": their CPU time is
the delta of psutil's counters over the step, and their RSS counts towards the peak.
Peak RSS is sampled every 50 ms as the sum over the command's tree and the watched
processes. (wait4's ru_maxrss is useless here: a child forked from this process starts
with the harness's own RSS, which ru_maxrss keeps after exec.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05


class CommandFailed(Exception):
    pass


@dataclass
class Measurement:
    wall_s: float = 0.0
    cpu_s: float = 0.0  # client tree + watched processes
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    peak_rss: int = 0  # bytes: max over samples of (client tree + watched)
    client_peak_rss: int = 0
    server_peak_rss: int = 0
    commands: int = 0
    foreign_cpu_s: float = 0.0  # CPU other processes on the machine used meanwhile (noise)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


def _cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    except psutil.Error:
        return 0.0


@dataclass
class Runner:
    """Runs commands, logging their output; inside measure() their cost is recorded."""

    log_dir: Path
    timeout_s: float
    _current: psutil.Process | None = None
    _meas: Measurement | None = None
    _watch: list[psutil.Process] = field(default_factory=list)
    _count: int = 0

    def run(
        self, argv: list[str], env: dict[str, str], cwd: Path | None = None, label: str = ""
    ) -> str:
        """Run to completion; return stdout. Raises CommandFailed on a non-zero exit."""
        self._count += 1
        stem = self.log_dir / f"{self._count:04d}-{label or Path(argv[0]).name}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: killable as a whole
            )
            timer = threading.Timer(self.timeout_s, _kill_group, (proc.pid,))
            timer.start()
            try:
                self._current = psutil.Process(proc.pid)
            except psutil.Error:
                self._current = None
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
                self._current = None
            proc.returncode = os.waitstatus_to_exitcode(status)
        if self._meas is not None:
            self._meas.client_cpu_s += usage.ru_utime + usage.ru_stime
            self._meas.commands += 1
        if proc.returncode != 0:
            tail = err_path.read_text(errors="replace")[-3000:]
            raise CommandFailed(f"{' '.join(argv)} exited {proc.returncode} ({stem}):\n{tail}")
        return out_path.read_text(errors="replace")

    @contextlib.contextmanager
    def measure(self, watch: list[psutil.Process]) -> Iterator[Measurement]:
        meas = Measurement()
        self._meas, self._watch = meas, watch
        server_cpu0 = sum(_cpu(p) for p in watch)
        busy0 = _busy()
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(meas, stop), daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        try:
            yield meas
        finally:
            meas.wall_s = time.perf_counter() - t0
            stop.set()
            sampler.join()
            meas.server_cpu_s = sum(_cpu(p) for p in watch) - server_cpu0
            meas.cpu_s = meas.client_cpu_s + meas.server_cpu_s
            meas.foreign_cpu_s = max(0.0, _busy() - busy0 - meas.cpu_s)
            self._meas, self._watch = None, []

    def _sample(self, meas: Measurement, stop: threading.Event) -> None:
        while True:
            cur = self._current
            client = tree_rss(cur) if cur is not None else 0
            server = sum(tree_rss(p) for p in self._watch)
            meas.client_peak_rss = max(meas.client_peak_rss, client)
            meas.server_peak_rss = max(meas.server_peak_rss, server)
            meas.peak_rss = max(meas.peak_rss, client + server)
            if stop.wait(SAMPLE_SECONDS):
                return


def _busy() -> float:
    """CPU seconds all processes of the machine have used (not idle, not iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def tree_bytes(*paths: Path) -> int:
    """Apparent size (sum of file sizes, like `du -sb`) of files and directory trees."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
            continue
        for dirpath, _, filenames in os.walk(path):
            for name in filenames:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
