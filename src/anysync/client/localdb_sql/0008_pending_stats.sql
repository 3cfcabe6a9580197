-- Schema version 8: the stat rows a backup read, staged here during its walk instead of
-- held in memory (a first backup of 1M files kept ~1 GiB of them, issue #15). They move
-- into stat_cache in one transaction once the commit is referenced: the stat cache never
-- claims what no referenced snapshot holds. A backup starts by clearing the rows a
-- crashed run left. Same columns and MAC as stat_cache, so a row moves unchanged.
CREATE TABLE pending_stats (
    dir         BLOB NOT NULL,
    name        BLOB NOT NULL,
    ino         INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,
    chunks      BLOB NOT NULL,
    chunk_sizes BLOB NOT NULL,
    mac         BLOB NOT NULL,
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
