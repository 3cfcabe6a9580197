-- AnySync server metadata, schema 1. Applied in one transaction by the migration runner,
-- which then sets PRAGMA user_version = 1. Times are unix seconds.

-- users: one row per account. user_id is chosen by the client (it is bound into the
-- account's encrypted master.keys) and email is stored normalised (stripped, lower
-- case). kdf_* are the client's scrypt parameters, handed out by PreLogin; the server
-- cannot derive anything from them. login_hash is the server's own slow hash of the
-- client's login secret, with its own salt and a parameter string such as
-- "scrypt$14$8$1" so that the hash can be upgraded later. master_keys is ciphertext.
-- quota_bytes NULL means the server's default quota, 0 unlimited. used_bytes is the sum
-- of the account's pack sizes, kept in step with packs in the same transaction.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT    NOT NULL UNIQUE,
    email           TEXT    NOT NULL UNIQUE,
    kdf_salt        BLOB    NOT NULL,
    kdf_log_n       INTEGER NOT NULL,
    kdf_r           INTEGER NOT NULL,
    kdf_p           INTEGER NOT NULL,
    login_hash      BLOB    NOT NULL,
    login_hash_salt BLOB    NOT NULL,
    login_hash_params TEXT  NOT NULL,
    master_keys     BLOB    NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    quota_bytes     INTEGER,
    used_bytes      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
) STRICT;

-- devices: one row per login. The access token itself is never stored, only its
-- SHA-256 (token_hash), so a copy of this database does not let anyone in. A revoked
-- device keeps its row (revoked_at set) so that the device list shows it.
-- AUTOINCREMENT: a device ID is never reused, even after the highest row is deleted.
CREATE TABLE devices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user         INTEGER NOT NULL REFERENCES users(id),
    name         TEXT    NOT NULL,
    public_key   BLOB    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX devices_by_user ON devices(user);

-- invites: one-time sign-up codes for registration = "invite". Only the SHA-256 of a
-- code is stored. used_at/used_by are set in the transaction that creates the account.
CREATE TABLE invites (
    code_hash  BLOB    PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    used_by    INTEGER REFERENCES users(id)
) STRICT;

-- packs: the stored objects of each account. pack_id is random and chosen by the
-- server; the object's store key is derived from the account and the pack_id. A row is
-- written only after the object is durably stored, so every row names a real object.
CREATE TABLE packs (
    user       INTEGER NOT NULL REFERENCES users(id),
    pack_id    BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user, pack_id)
) STRICT, WITHOUT ROWID;

-- blobs: the per-account index, blob ID → byte range of a pack. Blob IDs are keyed
-- hashes, opaque to the server. When two packs hold the same blob, the first one
-- recorded wins (INSERT OR IGNORE); both copies are valid ciphertext.
CREATE TABLE blobs (
    user    INTEGER NOT NULL,
    blob_id BLOB    NOT NULL,
    pack_id BLOB    NOT NULL,
    offset  INTEGER NOT NULL,
    length  INTEGER NOT NULL,
    PRIMARY KEY (user, blob_id),
    FOREIGN KEY (user, pack_id) REFERENCES packs(user, pack_id)
) STRICT, WITHOUT ROWID;

-- refs: named pointers to commits, per account: (user, name) is the key, so two
-- accounts using the same name have two different refs. Updated only by
-- compare-and-swap on version (1 after creation, +1 per update).
CREATE TABLE refs (
    user              INTEGER NOT NULL REFERENCES users(id),
    name              TEXT    NOT NULL,
    commit_id         BLOB    NOT NULL,
    version           INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    updated_by_device INTEGER NOT NULL REFERENCES devices(id),
    PRIMARY KEY (user, name)
) STRICT, WITHOUT ROWID;
