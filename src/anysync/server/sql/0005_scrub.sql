-- Schema 5: what the server's scrub remembers between runs (docs/prune-design.md §8).

-- scrub_orphans: objects in the store without a packs row, by store key, since the
-- scrub that first listed them (unix s). The store gives no modification times, and a
-- direct upload in flight is such an object for a moment: only an orphan older than
-- [scrub] orphan_age is reported. A row goes when its object goes or gets its pack row.
-- Nothing is ever deleted from the store because of this table.
CREATE TABLE scrub_orphans (
    key        TEXT    NOT NULL PRIMARY KEY,
    size       INTEGER NOT NULL,
    first_seen INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- scrub_last: the findings of the last finished scrub (the metrics show them, also
-- after a scrub run from the command line); one row, written by each scrub.
CREATE TABLE scrub_last (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    at            INTEGER NOT NULL,
    missing_packs INTEGER NOT NULL,
    orphan_packs  INTEGER NOT NULL,
    orphan_bytes  INTEGER NOT NULL
) STRICT;
