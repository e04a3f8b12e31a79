-- Withdrawals to Solana addresses: a pending ledger transfer to the outside world plus the
-- Solana Pay request that settles it. Settled with the transaction's signature.
CREATE TABLE payouts (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL REFERENCES accounts(address),
    asset         TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    recipient     TEXT NOT NULL,
    reference     TEXT NOT NULL,
    url           TEXT NOT NULL,
    state         TEXT NOT NULL,      -- pending | settled
    tx_signature  TEXT,
    created_at    INTEGER NOT NULL,
    settled_at    INTEGER
);
CREATE INDEX payouts_by_owner ON payouts(owner, created_at);
