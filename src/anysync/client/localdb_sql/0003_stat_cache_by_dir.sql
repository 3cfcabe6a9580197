-- Schema version 3: the stat cache keyed by (directory, name), so that a backup loads
-- one directory's rows with one query instead of one query per file. It is a cache:
-- the old rows are dropped and the next backup reads every file once.
DROP TABLE stat_cache;

CREATE TABLE stat_cache (
    dir      BLOB NOT NULL,     -- absolute path of the directory, as bytes
    name     BLOB NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    chunks   BLOB NOT NULL,     -- concatenated 32-byte blob IDs
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
