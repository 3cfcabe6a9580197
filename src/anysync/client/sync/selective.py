"""Selective sync: keep a sub-tree of a folder off this device.

Excluding deletes the local copy of what is synced (files whose stat still matches their
record), keeps anything not yet synced, and never reads or removes anything outside the
folder: the path is resolved through directory handles without following symlinks, and a
symlink at the excluded path is the path itself (removed only if it is the synced link).
"""

from __future__ import annotations

import contextlib
import os
import stat

from anysync.client import localfs
from anysync.client.repo.tree import EntryType
from anysync.client.sync.state import Folder, Record, SyncState


def exclude(state: SyncState, folder: Folder, rel: bytes) -> int:
    """Record the exclusion, delete the synced local copy; returns how many entries were
    kept because they are not synced. Call after a successful pass of the folder."""
    records = state.records(folder.name)
    root_fd = localfs.open_root(folder.path)
    try:
        st = localfs.lstat(root_fd, rel)  # a symlinked parent raises: nothing touched
        state.set_excluded(folder.name, rel, True)
        kept = 0
        if st is not None and stat.S_ISDIR(st.st_mode):
            for item in localfs.walk(root_fd, rel):
                kept += _remove_if_synced(root_fd, item.rel, item.st, records.get(item.rel))
            with contextlib.suppress(OSError, localfs.NotEmpty):
                localfs.remove(root_fd, rel, None, is_dir=True)
        elif st is not None:
            kept += _remove_if_synced(root_fd, rel, st, records.get(rel))
        state.drop_records_under(folder.name, rel)
        return kept
    finally:
        os.close(root_fd)


def _remove_if_synced(root_fd: int, rel: bytes, st: os.stat_result, record: Record | None) -> int:
    if stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError, localfs.NotEmpty):
            localfs.remove(root_fd, rel, None, is_dir=True)  # empty once its files are gone
        return 0
    is_link = stat.S_ISLNK(st.st_mode)
    if (
        record is None
        or record.stat != localfs.stat_key(st)
        or (record.entry.type is EntryType.SYMLINK) != is_link
    ):
        return 1
    try:
        localfs.remove(root_fd, rel, record.stat, is_dir=False)
    except (OSError, localfs.ChangedMeanwhile):
        return 1
    return 0
