"""The client's local SQLite state: stat cache and rollback floor (schema in localdb_sql/).

A corrupt database is moved aside and rebuilt: it holds nothing that the server cannot
give back, so the user loses at most one slow (full-read) backup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

from anysync import crypto
from anysync.errors import LocalStateError
from anysync.types import BLOB_ID_SIZE, BlobId

log = logging.getLogger(__name__)

# The stat cache, and the rows a running backup staged for it (schema 8).
StatTable = Literal["stat_cache", "pending_stats"]
_COLUMNS = "dir, name, ino, size, mtime_ns, ctime_ns, chunks, chunk_sizes, mac"


def _on(table: StatTable, sql: str) -> str:
    """`sql` with {t} as `table`, which is one of two constant names, never input."""
    if table not in get_args(StatTable):
        raise ValueError(f"not a stat table: {table!r}")
    return sql.format(t=table, columns=_COLUMNS)


@dataclass(frozen=True, slots=True)
class CachedStat:
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    chunks: tuple[BlobId, ...]
    chunk_sizes: tuple[int, ...] = ()  # as tree.TreeEntry.chunk_sizes


def unchanged(cached: CachedStat, st: os.stat_result) -> bool:
    """The file is as it was when its row was made: same inode, size, mtime and ctime
    (localfs.StatKey's fields). Then its chunks are reused, not read again."""
    return (cached.ino, cached.size, cached.mtime_ns, cached.ctime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def _ids(raw: bytes) -> tuple[BlobId, ...]:
    return tuple(BlobId(raw[i : i + BLOB_ID_SIZE]) for i in range(0, len(raw), BLOB_ID_SIZE))


def pack_sizes(sizes: Sequence[int]) -> bytes:
    """Chunk sizes as a column: concatenated u32 little-endian."""
    return struct.pack(f"<{len(sizes)}I", *sizes)


def unpack_sizes(raw: bytes) -> tuple[int, ...]:
    """The inverse of pack_sizes; struct.error if `raw` is not a whole number of u32."""
    return struct.unpack(f"<{len(raw) // 4}I", raw)


def sizes_fit(sizes: tuple[int, ...], chunks: tuple[BlobId, ...], size: int) -> bool:
    """Can these be the chunk sizes of a file of `size` bytes in `chunks` (() = not known)?
    The same rule as tree.sizes_problem, so that a row never makes an entry a tree refuses."""
    if not sizes:
        return True
    return len(sizes) == len(chunks) and min(sizes) > 0 and sum(sizes) == size


def local_state_key(id_key: bytes) -> bytes:
    """The key of the stat cache's row MACs, derived from the account's ID key."""
    return crypto.hkdf(id_key, b"anysync v1 local state")


def _row_mac(key: bytes, directory: bytes, name: bytes, s: CachedStat) -> bytes:
    """Binds a row's path, stat key, chunk IDs and chunk sizes: a row moved to another
    file, or any field changed, no longer verifies. Lengths are framed so fields cannot
    slide (schema 7; the rows of schema 5, whose MAC ended with the chunk IDs, were
    dropped by the migration)."""
    message = b"".join(
        [
            b"stat_cache\0",
            struct.pack("<I", len(directory)),
            directory,
            struct.pack("<I", len(name)),
            name,
            struct.pack("<QQqq", s.ino, s.size, s.mtime_ns, s.ctime_ns),
            struct.pack("<I", len(s.chunks)),
            *(c.raw for c in s.chunks),
            struct.pack("<I", len(s.chunk_sizes)),
            pack_sizes(s.chunk_sizes),
        ]
    )
    return crypto.keyed_hash(key, message)


def _migrations() -> list[tuple[int, str]]:
    """The numbered schema steps of localdb_sql/, 1..N without a gap: a database at
    version k runs exactly the steps after k, so a missing number would be skipped for
    ever by every database already past it."""
    folder = resources.files("anysync.client") / "localdb_sql"
    out = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            out.append((int(item.name.split("_", 1)[0]), item.read_text("utf-8")))
    out.sort()
    numbers = [n for n, _ in out]
    if numbers != list(range(1, len(out) + 1)):
        raise RuntimeError(f"localdb_sql/ migrations are not numbered 1..N: {numbers}")
    return out


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
            steps = _migrations()
            if version > len(steps):
                raise LocalStateError(
                    f"{self.path} was written by a newer anysync (schema {version}, this one "
                    f"knows {len(steps)}); upgrade anysync, or use another ANYSYNC_HOME"
                )
            for number, sql in steps:
                if number > version:
                    conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
            conn.execute("SELECT count(*) FROM stat_cache").fetchone()
        except (sqlite3.DatabaseError, LocalStateError):
            conn.close()
            raise
        self.path.chmod(0o600)
        return conn

    def close(self) -> None:
        self._conn.close()

    # ----------------------------------------------------------------- stat cache

    def stats_in(
        self, directory: bytes, key: bytes, table: StatTable = "stat_cache"
    ) -> tuple[dict[bytes, CachedStat], int]:
        """The cached (or staged) stats of the files directly inside `directory`, by name,
        and the number of rows that failed their MAC: those are deleted, so their files
        are read."""
        rows = self._conn.execute(
            _on(
                table,
                "SELECT name, ino, size, mtime_ns, ctime_ns, chunks, chunk_sizes, mac"
                " FROM {t} WHERE dir = ?",
            ),
            (directory,),
        ).fetchall()
        good: dict[bytes, CachedStat] = {}
        bad: list[bytes] = []
        for name, ino, size, mtime, ctime, raw, raw_sizes, mac in rows:
            try:
                cached = CachedStat(ino, size, mtime, ctime, _ids(raw), unpack_sizes(raw_sizes))
                sound = sizes_fit(cached.chunk_sizes, cached.chunks, size) and (
                    crypto.constant_time_equal(mac, _row_mac(key, directory, name, cached))
                )
            except (TypeError, ValueError, struct.error):  # a field of the wrong type or size
                sound = False
            if sound:
                good[name] = cached
            else:
                bad.append(name)
        self._conn.executemany(
            _on(table, "DELETE FROM {t} WHERE dir = ? AND name = ?"),
            [(directory, n) for n in bad],
        )
        return good, len(bad)

    def put_stats(
        self,
        rows: Iterable[tuple[bytes, CachedStat]],
        key: bytes,
        table: StatTable = "stat_cache",
    ) -> None:
        """Cache (or stage) these rows. They are encoded one by one as SQLite takes them: a list of
        100k encoded rows was the peak of a first backup's memory."""

        def records() -> Iterator[tuple[object, ...]]:
            for path, s in rows:
                directory, name = os.path.split(path)
                chunks = b"".join(c.raw for c in s.chunks)
                sizes = pack_sizes(s.chunk_sizes)
                mac = _row_mac(key, directory, name, s)
                yield (directory, name, s.ino, s.size, s.mtime_ns, s.ctime_ns, chunks, sizes, mac)

        with self.transaction():
            self._conn.executemany(
                _on(
                    table,
                    "INSERT OR REPLACE INTO {t} ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ),
                records(),
            )

    def forget_stats(self, paths: list[bytes]) -> None:
        """Drop the rows of these files, cached or staged: the next walk reads them."""
        where = [os.path.split(p) for p in paths]
        with self.transaction():
            for table in get_args(StatTable):
                self._conn.executemany(
                    _on(table, "DELETE FROM {t} WHERE dir = ? AND name = ?"), where
                )

    def staged_chunks(self) -> Iterator[tuple[bytes, tuple[BlobId, ...]]]:
        """The chunk IDs of every staged row, by path, read as the caller goes."""
        for directory, name, raw in self._conn.execute(
            "SELECT dir, name, chunks FROM pending_stats"
        ):
            yield os.path.join(directory, name), _ids(raw)

    def clear_staged(self) -> None:
        """Drop the rows a backup staged: it crashed or was stopped before its commit."""
        with self.transaction():
            self._conn.execute("DELETE FROM pending_stats")

    def promote_staged(self) -> None:
        """Cache every staged row, in one transaction: the backup's commit is referenced."""
        with self.transaction():
            self._conn.execute(
                _on(
                    "stat_cache",
                    "INSERT OR REPLACE INTO {t} ({columns}) SELECT {columns} FROM pending_stats",
                )
            )
            self._conn.execute("DELETE FROM pending_stats")

    # ----------------------------------------------------------------- rollback floor

    def seen(self, ref: str) -> tuple[BlobId, int] | None:
        row = self._conn.execute(
            "SELECT commit_id, counter FROM seen_commits WHERE ref = ?", (ref,)
        ).fetchone()
        return (BlobId(row[0]), row[1]) if row else None

    def set_seen(self, ref: str, commit_id: BlobId, counter: int, label: str | None = None) -> None:
        """Raise the floor of `ref`; `label` (None: keep the one stored) names it for people."""
        self._conn.execute(
            "INSERT INTO seen_commits (ref, commit_id, counter, label) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (ref) DO UPDATE SET commit_id = excluded.commit_id, "
            "counter = excluded.counter, label = coalesce(?, label)",
            (ref, commit_id.raw, counter, label or "", label),
        )

    def seen_labels(self) -> dict[str, str]:
        """Every ref this device has seen, with its label ('' if not known yet)."""
        return dict(self._conn.execute("SELECT ref, label FROM seen_commits").fetchall())

    # ----------------------------------------------------------------- for table classes
    # Other tables of this file (sync/state.py) go through these, never the connection.

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self, durable: bool = False) -> Iterator[None]:
        """All or nothing. `durable`: on disk when this returns (synchronous=FULL), for
        writes that must survive a power cut, such as a journal written before disk changes."""
        if durable:
            self._conn.execute("PRAGMA synchronous=FULL")
        try:
            self._conn.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        finally:
            if durable:
                self._conn.execute("PRAGMA synchronous=NORMAL")
