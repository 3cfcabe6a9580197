-- Sync folders, schema version 2.

-- sync_folders: the folders this device syncs. `name` is shared by every device of the
-- folder (the ref name is derived from it with the ID key); `path` is where it lives here.
CREATE TABLE sync_folders (
    name         TEXT PRIMARY KEY,
    path         BLOB NOT NULL UNIQUE,
    ref          TEXT NOT NULL,
    last_sync_ns INTEGER,          -- end of the last successful pass
    last_error   TEXT              -- why the last pass failed, NULL if it did not
);

-- sync_files: per path materialised on this device, the version this device last agreed
-- on with the folder (the merge base) and the disk stat it had then. A path without a
-- row was never written here (excluded, ignored, or not downloaded yet): its absence on
-- disk is not a delete.
CREATE TABLE sync_files (
    folder   TEXT    NOT NULL REFERENCES sync_folders(name) ON DELETE CASCADE,
    path     BLOB    NOT NULL,     -- relative, '/'-separated
    type     INTEGER NOT NULL,     -- tree.EntryType
    mode     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    chunks   BLOB    NOT NULL,     -- concatenated 32-byte blob IDs (files)
    target   BLOB    NOT NULL,     -- symlink target
    ino      INTEGER NOT NULL,     -- disk stat when it matched the entry
    ctime_ns INTEGER NOT NULL,
    disk_mtime_ns INTEGER NOT NULL,
    disk_size INTEGER NOT NULL,
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;

-- sync_excludes: selective sync. Sub-trees of a folder kept off this device.
CREATE TABLE sync_excludes (
    folder TEXT NOT NULL REFERENCES sync_folders(name) ON DELETE CASCADE,
    path   BLOB NOT NULL,
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;
