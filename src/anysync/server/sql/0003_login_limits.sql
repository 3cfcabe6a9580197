-- Schema 3: what anysync.server.limiter remembers, so that a restart forgives nobody
-- (issue #12). Times are unix seconds with fractions (REAL). Both tables are pruned
-- by the limiter: rows expire, and the oldest go first when a table is over its cap.

-- login_failures: failed log-ins per client address (IPv6: per /64), one row for each
-- e-mail tried from the address and one with email '' for all of them together. A
-- failure count is forgotten a day after its last failure and on a successful log-in
-- (the e-mail's row only). E-mail addresses are stored normalised; they need not
-- belong to an account.
CREATE TABLE login_failures (
    address      TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    failures     INTEGER NOT NULL,
    last_failure REAL    NOT NULL,
    PRIMARY KEY (address, email)
) STRICT, WITHOUT ROWID;

-- call_buckets: a token bucket per kind of call ('prelogin', 'signup') and client
-- address: `tokens` calls were left at time `updated`; the bucket refills at the
-- limiter's rate. A full bucket is the same as no row.
CREATE TABLE call_buckets (
    kind    TEXT NOT NULL,
    address TEXT NOT NULL,
    tokens  REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, address)
) STRICT, WITHOUT ROWID;
