"""The client's local SQLite state: stat cache and rollback floor (schema in localdb_sql/).

A corrupt database is moved aside and rebuilt: it holds nothing that the server cannot
give back, so the user loses at most one slow (full-read) backup.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from anysync.types import BLOB_ID_SIZE, BlobId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedStat:
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    chunks: tuple[BlobId, ...]


def _ids(raw: bytes) -> tuple[BlobId, ...]:
    return tuple(BlobId(raw[i : i + BLOB_ID_SIZE]) for i in range(0, len(raw), BLOB_ID_SIZE))


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("anysync.client") / "localdb_sql"
    out = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            out.append((int(item.name.split("_", 1)[0]), item.read_text("utf-8")))
    return sorted(out)


class StateDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            path.rename(aside)
            log.warning(
                "local state %s was unreadable (%s); moved it to %s and starting fresh "
                "(the next backup reads every file once)",
                path,
                exc,
                aside,
            )
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for number, sql in _migrations():
                if number > version:
                    conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
            conn.execute("SELECT count(*) FROM stat_cache").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        self.path.chmod(0o600)
        return conn

    def close(self) -> None:
        self._conn.close()

    # ----------------------------------------------------------------- stat cache

    def stats_in(self, directory: bytes) -> dict[bytes, CachedStat]:
        """The cached stats of the files directly inside `directory`, by name."""
        rows = self._conn.execute(
            "SELECT name, ino, size, mtime_ns, ctime_ns, chunks FROM stat_cache WHERE dir = ?",
            (directory,),
        )
        return {
            name: CachedStat(ino, size, mtime, ctime, _ids(raw))
            for name, ino, size, mtime, ctime, raw in rows
        }

    def put_stats(self, rows: list[tuple[bytes, CachedStat]]) -> None:
        with self.transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO stat_cache VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        *os.path.split(p),
                        s.ino,
                        s.size,
                        s.mtime_ns,
                        s.ctime_ns,
                        b"".join(c.raw for c in s.chunks),
                    )
                    for p, s in rows
                ],
            )

    # ----------------------------------------------------------------- rollback floor

    def seen(self, ref: str) -> tuple[BlobId, int] | None:
        row = self._conn.execute(
            "SELECT commit_id, counter FROM seen_commits WHERE ref = ?", (ref,)
        ).fetchone()
        return (BlobId(row[0]), row[1]) if row else None

    def set_seen(self, ref: str, commit_id: BlobId, counter: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO seen_commits VALUES (?, ?, ?)", (ref, commit_id.raw, counter)
        )

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def transaction(self) -> _Tx:
        return _Tx(self._conn)


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
