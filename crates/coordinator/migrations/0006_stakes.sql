-- Unstake requests: the 14-day cooldown starts here. Stakes themselves are ledger balances
-- (a vault account per device).
CREATE TABLE unstake_requests (
    device_id     TEXT PRIMARY KEY REFERENCES devices(id),
    requested_at  INTEGER NOT NULL
);
