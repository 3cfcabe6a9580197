-- Schema version 5: every stat-cache row carries a MAC, keyed with a key derived from the
-- account's ID key (HKDF, info "anysync v1 local state"), over the table name, the path
-- (dir, name), the stat key (ino, size, mtime, ctime) and the chunk IDs. A row that was
-- swapped, edited or written by anything but this account's client fails it, is dropped
-- and its file is read again (docs/design.md §7). It is a cache: the old rows, which have
-- no MAC, are dropped and the next backup reads every file once.
DROP TABLE stat_cache;

CREATE TABLE stat_cache (
    dir      BLOB NOT NULL,     -- absolute path of the directory, as bytes
    name     BLOB NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    chunks   BLOB NOT NULL,     -- concatenated 32-byte blob IDs
    mac      BLOB NOT NULL,     -- keyed BLAKE3 of the row (statedb._row_mac)
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
