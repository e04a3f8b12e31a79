-- The ledger's journal: every applied transfer, hash-chained; each batch's last entry is
-- signed by the coordinator's ledger key. Balances are never stored: they are recomputed from
-- this table. It is append-only and carries no text indexes (they cost 3× the write rate);
-- ids are unique because the ledger refuses reused ids before anything is written.
CREATE TABLE journal (
    seq          INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    transfer_id  TEXT NOT NULL,
    body         TEXT NOT NULL,    -- JSON Transfer, exactly as hashed
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    signature    TEXT NOT NULL     -- base58 Ed25519 over the hash of a batch's last entry; '' inside a batch
);

-- Which entries touch which account, for history: small integer keys (the first 8 bytes of
-- SHA-256 of the account's JSON key) in a table clustered by them.
CREATE TABLE journal_accounts (
    account  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (account, seq)
) WITHOUT ROWID;
