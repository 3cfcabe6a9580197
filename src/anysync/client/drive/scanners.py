"""Which processes are indexers, thumbnailers or locate scanners, which would otherwise download
every file of the drive just to look at it.

A process is named three ways, all read from /proc: its `comm` (the executable's name, cut by the
kernel to 15 bytes), the basename of its executable, and the basename of its argv[0]. A KIO
launcher (kioworker, kioslave5) runs the worker plugin named by its first argument, so for
those the plugin's file name (`thumbnail.so`) counts as a name too. A sandbox launcher (bwrap)
is not a scanner by itself, since Flatpak runs every app in one: the thumbnailer it starts is a
process of its own, with its own name, and that is what opens the file.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence

DEFAULT_SCANNERS: tuple[str, ...] = (
    # KDE Baloo: the indexer and its content extractor
    "baloo_file",
    "baloo_file_extractor",
    # GNOME Tracker / LocalSearch: tracker-miner-fs-3, tracker-extract-3, localsearch-3, ...
    "tracker-*",
    "localsearch*",
    # Thumbnailers. The named ones also match a truncated comm when /proc/PID/exe is not
    # readable (a sandboxed thumbnailer); "*-thumbnailer" catches the others of
    # /usr/share/thumbnailers by their executable's name.
    "gnome-desktop-thumbnailer",
    "gdk-pixbuf-thumbnailer",
    "evince-thumbnailer",
    "totem-video-thumbnailer",
    "ffmpegthumbnailer",
    "*-thumbnailer",
    "tumblerd",
    "thumbnail.so",  # KIO's thumbnail worker (Dolphin)
    # locate databases: updatedb, updatedb.plocate, updatedb.mlocate
    "updatedb*",
    "plocate*",
    "mlocate*",
)

COMM_MAX = 15  # TASK_COMM_LEN - 1: the kernel cuts longer names to this many bytes
_KIO_LAUNCHERS = frozenset({"kioworker", "kioslave5", "kioslave"})
_DELETED = " (deleted)"  # what readlink of /proc/PID/exe appends once the file is gone


def scanner_name(pid: int, patterns: Sequence[str] = DEFAULT_SCANNERS) -> str | None:
    """The name under which process `pid` matches one of `patterns`, or None (also when the
    process is gone or /proc cannot be read). Never raises."""
    proc = f"/proc/{pid}"
    full_names = [*_exe_name(proc), *_argv_names(proc)]
    for name in full_names:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return name
    comm = _read_text(f"{proc}/comm").rstrip("\n")
    if comm and any(_comm_matches(comm, p) for p in patterns):
        return comm
    return None


def _comm_matches(comm: str, pattern: str) -> bool:
    """A comm of exactly 15 bytes may be a longer name cut short: it matches a pattern cut
    the same way ("gdk-pixbuf-thumbnailer" -> "gdk-pixbuf-thum")."""
    if fnmatch.fnmatchcase(comm, pattern):
        return True
    cut = len(comm.encode()) == COMM_MAX
    return cut and fnmatch.fnmatchcase(comm, pattern.encode()[:COMM_MAX].decode(errors="ignore"))


def _exe_name(proc: str) -> list[str]:
    try:
        target = os.readlink(f"{proc}/exe")
    except OSError:
        return []
    target = target.removesuffix(_DELETED)
    return [os.path.basename(target)]


def _argv_names(proc: str) -> list[str]:
    """argv[0]'s basename, and for a KIO launcher also its worker plugin's file name."""
    try:
        with open(f"{proc}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return []
    names = [os.path.basename(os.fsdecode(arg)) for arg in argv[:2]]
    if not names[0]:
        return []  # a kernel thread or a zombie: no command line
    if names[0] in _KIO_LAUNCHERS and len(names) > 1:
        return names
    return names[:1]


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
