"""A drive's durable state: the head it serves, its local changes, its pins.

meta.db (SQLite, WAL, synchronous=FULL: a change row is on disk before the FUSE
operation that made it returns), schema version in `PRAGMA user_version`:

    head     (one row)  commit_id, counter, tree_id   the ref head the drive shows; NULLs
                                                      while the ref has no commit
    changes  path PK, entry, dirty, seq, base         a local change since that head, per
                                                      path: `entry` a one-entry tree (tree
                                                      codec) or NULL for "deleted"; `dirty`
                                                      names the working copy dirty/<dirty>
                                                      of a file whose content changed;
                                                      `base` the path's entry in the head
                                                      the change was made on (NULL: none)
    pins     path PK                                  sub-trees kept offline ("" = all)
    counters name PK, value                           the next dirty ID and change seq

The change rows are the drive's journal, kept compacted per path: what a replay would
produce, not the operations. They leave only when a commit holding them has moved the
ref (daemon.commit), so a killed daemon finds them again and commits them again; a
commit that landed before the kill is recognised by the merge (same change on both
sides) and not made twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from anysync.client.repo import tree
from anysync.client.repo.tree import EntryType, TreeEntry
from anysync.errors import LocalStateError
from anysync.types import BlobId

SCHEMA = 1
_TABLES = """
CREATE TABLE head (one INTEGER PRIMARY KEY CHECK (one = 1), commit_id BLOB, counter INTEGER,
                   tree_id BLOB);
INSERT INTO head VALUES (1, NULL, 0, NULL);
CREATE TABLE changes (path BLOB PRIMARY KEY, entry BLOB, dirty INTEGER, seq INTEGER NOT NULL,
                      base BLOB);
CREATE TABLE pins (path BLOB PRIMARY KEY);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('dirty', 1), ('seq', 1);
"""


@dataclass(frozen=True)
class Head:
    commit_id: BlobId | None
    counter: int
    tree_id: BlobId | None


@dataclass(frozen=True)
class Change:
    """A path's local state, overriding the head: `entry` None = deleted. A changed
    file's content lives in dirty/<dirty> until a commit holds it. `base` is what the
    path was in the head the change was made on: the merge's base for it, so that a
    head that moved meanwhile (a file kept open while another device changed it) makes
    a conflict copy instead of losing the other device's version."""

    entry: TreeEntry | None
    dirty: int | None
    seq: int
    base: TreeEntry | None = None


# A directory made in the drive has no tree yet: its row stores this ID instead.
_NO_TREE = BlobId(bytes(32))


def encode_entry(entry: TreeEntry) -> bytes:
    if entry.type is EntryType.DIR and entry.subtree is None:
        entry = replace(entry, subtree=_NO_TREE)
    return tree.encode([entry])


def decode_entry(raw: bytes) -> TreeEntry:
    (entry,) = tree.decode(raw)
    if entry.type is EntryType.DIR and entry.subtree == _NO_TREE:
        entry = replace(entry, subtree=None)
    return entry


def _raw(entry: TreeEntry | None) -> bytes | None:
    return encode_entry(entry) if entry is not None else None


def _entry(raw: bytes | None) -> TreeEntry | None:
    return decode_entry(raw) if raw is not None else None


class DriveMeta:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA:
                raise LocalStateError(
                    f"{path} was written by a newer anysync (drive schema {version}); upgrade"
                )
            if version == 0:
                self._conn.executescript(
                    f"BEGIN;\n{_TABLES}\nPRAGMA user_version={SCHEMA};\nCOMMIT;"
                )
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LocalStateError(f"the drive state {path} is unreadable: {exc}") from None
        path.chmod(0o600)

    def close(self) -> None:
        self._conn.close()

    def head(self) -> Head:
        commit_id, counter, tree_id = self._conn.execute(
            "SELECT commit_id, counter, tree_id FROM head"
        ).fetchone()
        return Head(
            BlobId(commit_id) if commit_id else None, counter, BlobId(tree_id) if tree_id else None
        )

    def changes(self) -> dict[bytes, Change]:
        out = {}
        for path, raw, dirty, seq, base in self._conn.execute(
            "SELECT path, entry, dirty, seq, base FROM changes"
        ):
            out[bytes(path)] = Change(_entry(raw), dirty, seq, _entry(base))
        return out

    def pins(self) -> set[bytes]:
        return {bytes(p) for (p,) in self._conn.execute("SELECT path FROM pins")}

    def next_dirty(self) -> int:
        return self._bump("dirty")

    def _bump(self, name: str) -> int:
        (value,) = self._conn.execute(
            "UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value - 1", (name,)
        ).fetchone()
        return int(value)

    def write(
        self, put: dict[bytes, Change] | None = None, drop: Iterable[bytes] = ()
    ) -> dict[bytes, Change]:
        """Store and delete change rows in one transaction; returns the stored rows with
        their new sequence numbers (a later pass tells from them what changed since)."""
        stored = {}
        with self._transaction():
            for path in drop:
                self._conn.execute("DELETE FROM changes WHERE path = ?", (path,))
            for path, change in (put or {}).items():
                stored[path] = replace(change, seq=self._bump("seq"))
                self._put(path, stored[path])
        return stored

    def committed(
        self, head: Head, drop: Iterable[bytes], moved: dict[bytes, tuple[bytes, Change]]
    ) -> None:
        """A commit moved the ref: the new head, and the change rows it holds, in one
        transaction. `moved` re-keys rows that stay local (old path → new path, row)."""
        with self._transaction():
            self._conn.execute(
                "UPDATE head SET commit_id = ?, counter = ?, tree_id = ?",
                (
                    head.commit_id.raw if head.commit_id else None,
                    head.counter,
                    head.tree_id.raw if head.tree_id else None,
                ),
            )
            for path in drop:
                self._conn.execute("DELETE FROM changes WHERE path = ?", (path,))
            for old, (new, change) in moved.items():
                self._conn.execute("DELETE FROM changes WHERE path = ?", (old,))
                self._put(new, change)

    def _put(self, path: bytes, c: Change) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO changes VALUES (?, ?, ?, ?, ?)",
            (path, _raw(c.entry), c.dirty, c.seq, _raw(c.base)),
        )

    def set_pin(self, path: bytes, pinned: bool) -> None:
        with self._transaction():
            if pinned:
                self._conn.execute("INSERT OR IGNORE INTO pins VALUES (?)", (path,))
            else:
                self._conn.execute("DELETE FROM pins WHERE path = ?", (path,))

    def _transaction(self) -> _Tx:
        return _Tx(self._conn)


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
