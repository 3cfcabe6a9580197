-- Schema 2: metadata counts toward the quota (issue #12).

-- packs.charged: the bytes the pack counts toward its account's quota: its size, but
-- at least 256 bytes per index entry it carries (metadata.pack_charge), so that index
-- rows cannot be had for free. users.used_bytes is from now on the sum of the
-- account's packs' `charged`. Packs recorded before this schema were charged their size.
ALTER TABLE packs ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
UPDATE packs SET charged = size;
