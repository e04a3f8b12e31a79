-- Times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE accounts (
    address     TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);

-- Only the SHA-256 of each API key is kept; a leaked database leaks no usable key.
CREATE TABLE api_keys (
    key_hash     TEXT PRIMARY KEY,
    address      TEXT NOT NULL REFERENCES accounts(address),
    created_at   INTEGER NOT NULL
);
CREATE INDEX api_keys_by_address ON api_keys(address);

-- One-time nonces an account key signs to register or to obtain an API key.
CREATE TABLE auth_challenges (
    nonce       TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX auth_challenges_by_expiry ON auth_challenges(expires_at);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,            -- the device's public key, base58
    owner           TEXT NOT NULL REFERENCES accounts(address),
    state           TEXT NOT NULL,
    state_reason    TEXT NOT NULL,
    admitted        INTEGER NOT NULL DEFAULT 0,
    simulated       INTEGER NOT NULL,
    country         TEXT NOT NULL,
    gpu_model       TEXT,                        -- catalog name, NULL for CPU-only
    gpu_count       INTEGER NOT NULL,
    spec            TEXT NOT NULL,               -- JSON DeviceSpec
    advertise_addr  TEXT NOT NULL,
    cluster_id      TEXT,
    utilization     TEXT,                        -- JSON Utilization from the last heartbeat
    last_heartbeat_at INTEGER,
    created_at      INTEGER NOT NULL
);
-- Placement filters on these; never scan every device per request.
CREATE INDEX devices_for_placement ON devices(state, gpu_model, country);
CREATE INDEX devices_by_owner ON devices(owner);
CREATE INDEX devices_by_cluster ON devices(cluster_id);

-- Every state change with its time and reason: uptime and rewards are computed from this.
CREATE TABLE device_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX device_events_by_device ON device_events(device_id, id);

CREATE TABLE clusters (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL REFERENCES accounts(address),
    state       TEXT NOT NULL,
    hardware    TEXT NOT NULL,
    country     TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT
);
CREATE INDEX clusters_by_owner ON clusters(owner, created_at);
CREATE INDEX clusters_by_state_expiry ON clusters(state, expires_at);

CREATE TABLE cluster_nodes (
    cluster_id  TEXT NOT NULL REFERENCES clusters(id),
    rank        INTEGER NOT NULL,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    PRIMARY KEY (cluster_id, rank)
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    cluster_id      TEXT NOT NULL REFERENCES clusters(id),
    owner           TEXT NOT NULL REFERENCES accounts(address),
    state           TEXT NOT NULL,
    command         TEXT NOT NULL,               -- JSON array
    env             TEXT NOT NULL,               -- JSON object
    stop_requested  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX jobs_by_owner ON jobs(owner, created_at);
CREATE INDEX jobs_by_cluster ON jobs(cluster_id);

CREATE TABLE job_tasks (
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    rank         INTEGER NOT NULL,
    device_id    TEXT NOT NULL REFERENCES devices(id),
    state        TEXT NOT NULL,
    exit_code    INTEGER,
    error        TEXT,
    started_at   INTEGER,
    finished_at  INTEGER,
    PRIMARY KEY (job_id, rank)
);
CREATE INDEX job_tasks_by_device ON job_tasks(device_id, state);

CREATE TABLE job_logs (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT NOT NULL REFERENCES jobs(id),
    rank     INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    text     TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX job_logs_by_job ON job_logs(job_id, seq);
