-- Sync journal and stuck paths, schema version 4.

-- sync_journal: the intents of the sync pass in progress, written in one transaction
-- before the pass touches the folder. Per path, the entry the pass is about to put there
-- (type NOT NULL), or "absent" (type NULL) for a removal or the source of a move. A row
-- is deleted in the transaction that saves the path's record; rows left by a killed pass
-- are settled at the start of the next one: a path whose disk now holds the intended
-- entry gets it as its record (adoption), a path that is absent loses its record (it was
-- removed or moved away before its new entry was written); every other row is simply
-- dropped (the old record still describes the disk).
-- Rows written before the ref's compare-and-swap carry that commit (commit_id, counter):
-- they count only if the commit is in the folder's history (the CAS landed).
CREATE TABLE sync_journal (
    folder   TEXT    NOT NULL REFERENCES sync_folders(name) ON DELETE CASCADE,
    path     BLOB    NOT NULL,
    type     INTEGER,              -- tree.EntryType, NULL = absent
    mode     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    chunks   BLOB    NOT NULL,     -- concatenated 32-byte blob IDs (files)
    target   BLOB    NOT NULL,     -- symlink target
    commit_id BLOB,                -- NULL, or the commit whose CAS was in progress
    counter  INTEGER,              -- that commit's counter
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;

-- sync_stuck: paths the last pass of a folder could not apply, and why (a directory that
-- holds files that do not sync, a name too long for this file system, ...). Replaced as
-- a whole at the end of every pass; `sync status` and `sync list` show them as "stuck".
CREATE TABLE sync_stuck (
    folder TEXT NOT NULL REFERENCES sync_folders(name) ON DELETE CASCADE,
    path   BLOB NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;
