-- Token economics: markers of what has been done (genesis time, last rewarded hour, last
-- buyback hour), each written in the same transaction as the ledger entries it covers, and
-- the hourly reward blocks for the explorer.
CREATE TABLE economy (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);

CREATE TABLE reward_blocks (
    hour         INTEGER PRIMARY KEY,   -- hours since genesis
    at           INTEGER NOT NULL,
    emission     INTEGER NOT NULL,
    paid         TEXT NOT NULL,         -- JSON [[device, amount], …]
    failed       TEXT NOT NULL,         -- JSON [[device, reason], …]
    to_treasury  INTEGER NOT NULL
);
