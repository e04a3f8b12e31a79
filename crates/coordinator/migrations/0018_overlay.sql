-- Each lease's private overlay network (Nebula). A device tells in every hello whether it can
-- join one: its overlay public key (hex X25519, made by this run of its agent), or why not.
ALTER TABLE devices ADD COLUMN overlay_key TEXT;
ALTER TABLE devices ADD COLUMN overlay_unavailable TEXT;
-- A lease on the overlay has a /24 block of its own; blocks are unique among running leases.
ALTER TABLE clusters ADD COLUMN overlay_block INTEGER;
CREATE UNIQUE INDEX clusters_running_overlay_block ON clusters(overlay_block)
    WHERE overlay_block IS NOT NULL AND state = 'running';
-- Every host certificate the CA signed. Active: neither revoked (blocklisted by every member)
-- nor replaced (renewed with the same address on extend: not blocklisted).
CREATE TABLE overlay_certs (
    fingerprint TEXT PRIMARY KEY,
    cluster_id  TEXT NOT NULL REFERENCES clusters(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    epoch       INTEGER NOT NULL,
    host        INTEGER NOT NULL,
    address     TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    cert        TEXT NOT NULL,
    not_after   INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    revoked_at  INTEGER,
    replaced_at INTEGER,
    -- The node's last report: up, and its peers and error (JSON of OverlayReport).
    up          INTEGER NOT NULL DEFAULT 0,
    report      TEXT
);
CREATE INDEX overlay_certs_by_cluster ON overlay_certs(cluster_id, device_id, epoch);
