-- Proof of compute: every challenge and its result (public), what each device has proven,
-- the inputs of its reputation, and which GPU UUIDs each device reports.

CREATE TABLE verifications (
    id            TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices(id),
    purpose       TEXT NOT NULL,              -- admission | recheck
    claim         TEXT NOT NULL,              -- e.g. "1× H100"
    n             INTEGER NOT NULL,
    row_count     INTEGER NOT NULL,
    steps         INTEGER NOT NULL,
    stride        INTEGER NOT NULL,
    openings      INTEGER NOT NULL,
    expected_ms   INTEGER NOT NULL,
    deadline_ms   INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,
    committed_at  INTEGER,
    finished_at   INTEGER,
    outcome       TEXT NOT NULL,              -- running | passed | failed | declined | aborted
    reason        TEXT,
    verify_us     INTEGER
);
CREATE INDEX verifications_by_device ON verifications(device_id, issued_at);
CREATE INDEX verifications_passed ON verifications(outcome, finished_at);

ALTER TABLE devices ADD COLUMN verified_at INTEGER;
ALTER TABLE devices ADD COLUMN next_verification_at INTEGER;
-- Set while the device may not be verified (e.g. its GPU UUID is also reported elsewhere).
ALTER TABLE devices ADD COLUMN flag_reason TEXT;
ALTER TABLE devices ADD COLUMN verifications_passed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN verifications_failed INTEGER NOT NULL DEFAULT 0;
-- Deadlines missed in a row; the device is blocked at the policy's maximum.
ALTER TABLE devices ADD COLUMN deadline_strikes INTEGER NOT NULL DEFAULT 0;
-- Uptime EWMA in parts per million, updated by the reputation pass.
ALTER TABLE devices ADD COLUMN uptime_ppm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN reputation_at INTEGER;
ALTER TABLE devices ADD COLUMN leases_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN leases_interrupted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX devices_by_next_verification ON devices(state, next_verification_at);

CREATE TABLE device_gpus (
    uuid       TEXT NOT NULL,
    device_id  TEXT NOT NULL REFERENCES devices(id),
    PRIMARY KEY (uuid, device_id)
);
CREATE INDEX device_gpus_by_device ON device_gpus(device_id);

-- Devices admitted before proofs existed prove themselves on their next connection.
UPDATE devices SET admitted = 0 WHERE state != 'blocked';
