-- The ledger's journal: every applied transfer, hash-chained and signed by the coordinator's
-- ledger key. Balances are never stored: they are recomputed from this table.
CREATE TABLE journal (
    seq          INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    transfer_id  TEXT NOT NULL UNIQUE,
    debit        TEXT NOT NULL,    -- JSON AccountKey, for history queries
    credit       TEXT NOT NULL,
    asset        TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    code         TEXT NOT NULL,
    body         TEXT NOT NULL,    -- JSON Transfer, exactly as hashed
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    signature    TEXT NOT NULL     -- base58 Ed25519 over the hash
);
CREATE INDEX journal_by_debit ON journal(debit, seq);
CREATE INDEX journal_by_credit ON journal(credit, seq);
