"""Test-only fault points: die hard at a named step, to prove that a crash there loses nothing.

`point(name)` does nothing unless the environment variable ANYSYNC_TESTONLY_FAULT names
that point when the process starts: `NAME` (die the first time NAME is reached) or
`NAME:N` (die the N-th time); `NAME@stop` or `NAME:N@stop` stops there instead (SIGSTOP:
a test then does something else, and lets it go on with SIGCONT). Else the process
sends itself SIGKILL: a real crash, with
no cleanup, no `finally`, no atexit and no flushing, so a test that sees the process end
by signal 9 knows it was still running and had reached that step. Never set in
production; whoever controls a client's environment controls the client anyway. The
variable is read once per process; when unset, a point costs one comparison, so points
may sit in hot loops.

Points (name: where; what is on disk and on the server when the process dies):

repo.pack-uploaded
    repo/repository.py, upload thread, after a pack was stored and counted (once per
    pack). That pack and every earlier one are on the server and in its index; no commit
    refers to them yet; the ref is unchanged; the backup stat cache is not updated.
backup.packs-done
    backup.py run_backup, after repo.finish(): every content and tree blob of the new
    snapshot is stored in packs; the commit blob is not saved, the ref is unchanged.
history.commit-stored
    repo/refs.py RefBook.advance for backups, after the commit blob is stored
    (repo.finish()) and before the compare-and-swap of the ref: the commit exists on the
    server but no ref points at it; the stat cache is not updated.
sync.commit-stored
    repo/refs.py RefBook.advance for sync passes (sync/engine.py), after the merged tree
    and commit blob are stored and the records this commit makes true are journaled
    (tagged with the commit), before the ref's compare-and-swap: the folder's ref is
    unchanged, nothing local is written.
sync.before-apply
    sync/engine.py run_pass, after the head is agreed (this pass's commit is referenced,
    or there was nothing to commit) and before anything in the folder is written or
    removed; the local records are the previous pass's, the journal holds the rows
    tagged with this pass's commit (if it made one).
sync.file-partial
    sync/execute.py (through localfs.write_file), after each chunk of a downloaded file
    is written to its temp file (once per chunk): that file exists only as a partial
    `.anysync-tmp-*` beside its final name; the pass's journal holds its intents.
sync.apply-file
    sync/execute.py, after each downloaded file is complete under its final name and
    before its record is saved (once per file): moves, removals, directories and
    symlinks of this pass are done and recorded, earlier downloads too; this file's
    intent is still in the journal.
sync.before-records
    sync/execute.py, after every action of the pass is applied and recorded, before the
    final transaction (stuck paths replaced, the intents of failed actions cleared).
restore.file-partial
    restore.py, after each chunk is written to a file's temp file (once per chunk): that
    file exists only as a partial `.anysync-tmp-*` file beside its final name; files of
    earlier batches are complete under their final names, earlier files of this batch
    are complete temp files.
restore.file-written
    restore.py, after each file is renamed to its final name (once per file): its batch
    was written and synced; that file and those renamed before it are complete under
    their final names, the batch's later files complete temp files, later batches do not
    exist yet; directory modes and mtimes are not applied yet.
drive.commit-stored
    drive/commit.py (RefBook.advance), a drive's pass: its working copies are chunked
    and stored, the merged tree and commit too; the ref is unchanged; meta.db still
    holds every change row.
drive.ref-moved
    drive/daemon.py _settle, after the ref moved to the drive's commit and before
    meta.db records it: the served head and the change rows are the previous ones, so
    the restarted daemon's merge finds its changes already in the head (no second
    commit).
crypto.scrypt
    crypto.py scrypt, before the key derivation. Not a crash test: a command that must
    never run scrypt (all but signup, login, passwd, `keys protect --from-password` and a
    passphrase-protected device.keys) dies here if it does.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "ANYSYNC_TESTONLY_FAULT"
POINTS = frozenset(
    {
        "repo.pack-uploaded",
        "backup.packs-done",
        "history.commit-stored",
        "sync.commit-stored",
        "sync.before-apply",
        "sync.file-partial",
        "sync.apply-file",
        "sync.before-records",
        "restore.file-partial",
        "restore.file-written",
        "drive.commit-stored",
        "drive.ref-moved",
        "crypto.scrypt",
    }
)


def _parse(value: str | None) -> tuple[str, int, signal.Signals] | None:
    if not value:
        return None
    value, stop, _ = value.partition("@stop")
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV} names an unknown fault point {name!r}")
    n = int(count) if count else 1
    if n < 1:
        raise ValueError(f"{ENV}: the count must be at least 1, not {n}")
    return name, n, signal.SIGSTOP if stop else signal.SIGKILL


_armed_name: str | None
_armed_count: int
_armed_signal: signal.Signals
_armed_name, _armed_count, _armed_signal = _parse(os.environ.get(ENV)) or (
    None,
    0,
    signal.SIGKILL,
)
_hits = 0
_lock = threading.Lock()


def point(name: str) -> None:
    """Die by SIGKILL here if ANYSYNC_TESTONLY_FAULT names this point (and count)."""
    if name != _armed_name:  # the whole cost when unarmed: _armed_name is None
        return
    global _hits
    with _lock:  # points may be reached on several threads
        _hits += 1
        due = _hits == _armed_count
    if due:
        os.kill(os.getpid(), _armed_signal)
