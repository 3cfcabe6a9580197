-- Client state, schema version 1. A cache plus the rollback floor: everything here can
-- be rebuilt from the server except `seen_commits`, whose loss only weakens rollback
-- detection until the next commit is seen.

-- stat_cache: what the last successful backup read from each file. A file whose inode,
-- size, mtime and ctime are unchanged is not read again; its chunk IDs are reused after
-- the server confirms it still holds them.
CREATE TABLE stat_cache (
    path     BLOB PRIMARY KEY,  -- absolute path as bytes
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    chunks   BLOB NOT NULL      -- concatenated 32-byte blob IDs
) WITHOUT ROWID;

-- seen_commits: per ref, the newest commit this device has accepted. A head that does
-- not descend from it is refused (a server rolling a ref back).
CREATE TABLE seen_commits (
    ref       TEXT PRIMARY KEY,
    commit_id BLOB NOT NULL,
    counter   INTEGER NOT NULL
) WITHOUT ROWID;
