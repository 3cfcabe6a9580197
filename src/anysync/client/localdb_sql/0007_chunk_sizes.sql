-- Schema version 7: chunk sizes (tree format version 2, docs/design.md §4.4) beside every
-- stored chunk list, concatenated u32 little-endian, one per chunk; x'' = not known.

-- The stat cache's MAC now covers the sizes too (statedb._row_mac). It is a cache: the
-- old rows, whose MAC does not, are dropped and the next backup reads every file once
-- (uploading nothing the server holds), so that every file entry it writes has sizes.
DROP TABLE stat_cache;

CREATE TABLE stat_cache (
    dir         BLOB NOT NULL,  -- absolute path of the directory, as bytes
    name        BLOB NOT NULL,
    ino         INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,
    chunks      BLOB NOT NULL,  -- concatenated 32-byte blob IDs
    chunk_sizes BLOB NOT NULL,  -- concatenated u32, one per chunk
    mac         BLOB NOT NULL,  -- keyed BLAKE3 of the row (statedb._row_mac)
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;

-- Sync records and journal rows keep the sizes of the entries they hold. Rows written
-- before have none: their entries read as sizes not known, which changes nothing for
-- sync (flat.same compares chunk IDs), and they get sizes when next written.
ALTER TABLE sync_files ADD COLUMN chunk_sizes BLOB NOT NULL DEFAULT x'';
ALTER TABLE sync_journal ADD COLUMN chunk_sizes BLOB NOT NULL DEFAULT x'';
