-- The market: what devices offer (tiers, reputation, floor, size), what clusters cost, and
-- the quotes customers can create clusters from.

ALTER TABLE devices ADD COLUMN connectivity TEXT NOT NULL DEFAULT 'none';
ALTER TABLE devices ADD COLUMN down_mbps INTEGER;
ALTER TABLE devices ADD COLUMN up_mbps INTEGER;
ALTER TABLE devices ADD COLUMN security TEXT NOT NULL DEFAULT 'any';
ALTER TABLE devices ADD COLUMN reputation INTEGER NOT NULL DEFAULT 500;
-- USD micros per GPU-hour (per node-hour for CPU-only machines); NULL: the catalog default.
ALTER TABLE devices ADD COLUMN floor_micros INTEGER;
ALTER TABLE devices ADD COLUMN cpu_cores INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN ram_gib INTEGER NOT NULL DEFAULT 0;

ALTER TABLE clusters ADD COLUMN price_per_hour_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clusters ADD COLUMN asset TEXT NOT NULL DEFAULT 'usdc';
ALTER TABLE clusters ADD COLUMN request TEXT;
ALTER TABLE cluster_nodes ADD COLUMN node_hour_micros INTEGER NOT NULL DEFAULT 0;

CREATE TABLE quotes (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL REFERENCES accounts(address),
    request     TEXT NOT NULL,               -- JSON CreateCluster
    quote       TEXT NOT NULL,               -- JSON Quote
    expires_at  INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX quotes_by_expiry ON quotes(expires_at);
