-- Schema 4: prune, forget and device rights (issue #13, docs/prune-design.md §2).
-- The copy of `blobs` into `blob_locations` runs in this migration's one transaction:
-- minutes for ten million rows on a small board.

-- gc_generation: +1 per transaction that condemns packs (takes live locations away).
-- ref_seq: +1 per ref change. condemned_bytes: charged bytes condemned, not yet deleted.
ALTER TABLE users ADD COLUMN gc_generation   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN ref_seq         INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN condemned_bytes INTEGER NOT NULL DEFAULT 0;

-- state: 0 live, 1 condemned (deleted after [gc] grace), 2 reaping (being deleted).
-- Only live packs count toward used_bytes and give FindBlobs answers.
ALTER TABLE packs ADD COLUMN state        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE packs ADD COLUMN condemned_at INTEGER;
ALTER TABLE packs ADD COLUMN condemned_by INTEGER REFERENCES devices(id);
CREATE INDEX packs_due ON packs(state, condemned_at) WHERE state <> 0;

-- One row per copy of a blob, no longer one per blob: a blob uploaded again (or
-- repacked) keeps every location until its pack goes. Existing rows are copied as is.
CREATE TABLE blob_locations (
    user    INTEGER NOT NULL,
    blob_id BLOB    NOT NULL,
    pack_id BLOB    NOT NULL,
    offset  INTEGER NOT NULL,
    length  INTEGER NOT NULL,
    PRIMARY KEY (user, blob_id, pack_id),
    FOREIGN KEY (user, pack_id) REFERENCES packs(user, pack_id)
) STRICT, WITHOUT ROWID;
INSERT INTO blob_locations (user, blob_id, pack_id, offset, length)
    SELECT user, blob_id, pack_id, offset, length FROM blobs;
DROP TABLE blobs;
CREATE INDEX blob_locations_by_pack ON blob_locations(user, pack_id);

-- rights: what a device may do. 'append' adds only; 'write' also moves refs freely;
-- 'manage' may also delete (condemn packs) and change rights. elevated_until: a fresh
-- password proof (Elevate) gives a device the manage right until then (unix s).
-- Existing accounts: the oldest device still in use manages, the others write.
ALTER TABLE devices ADD COLUMN rights TEXT NOT NULL DEFAULT 'write'
    CHECK (rights IN ('append', 'write', 'manage'));
ALTER TABLE devices ADD COLUMN elevated_until INTEGER;
UPDATE devices SET rights = 'manage'
    WHERE id IN (SELECT min(id) FROM devices WHERE revoked_at IS NULL GROUP BY user);

-- ref_history: every version every ref has had; prune treats each as a root. seq is
-- the account's ref_seq after the change (unique per account, so it pages the
-- history). The current heads are the history known so far: numbered 1..n per account.
CREATE TABLE ref_history (
    user      INTEGER NOT NULL REFERENCES users(id),
    name      TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    commit_id BLOB    NOT NULL,
    seq       INTEGER NOT NULL,
    device    INTEGER NOT NULL REFERENCES devices(id),
    by_manage INTEGER NOT NULL,  -- 1: the writer had the manage right (or was elevated)
    at        INTEGER NOT NULL,
    PRIMARY KEY (user, name, version)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX ref_history_by_seq ON ref_history(user, seq);
CREATE INDEX ref_history_by_commit ON ref_history(user, name, commit_id);
INSERT INTO ref_history (user, name, version, commit_id, seq, device, by_manage, at)
    SELECT user, name, version, commit_id,
           row_number() OVER (PARTITION BY user ORDER BY name),
           updated_by_device, 0, updated_at
    FROM refs;
UPDATE users SET ref_seq = (SELECT count(*) FROM refs WHERE refs.user = users.id);
