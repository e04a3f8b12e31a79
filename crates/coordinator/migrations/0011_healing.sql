-- Self-healing clusters: a rank of a cluster is held by a succession of devices. Each tenure
-- is a row whose `epoch` (never reused) is the lease epoch workers echo in their reports;
-- billing covers each tenure from `joined_at` to `left_at` (the last heartbeat of a lost
-- device, or the lease's end).
CREATE TABLE cluster_nodes_v2 (
    epoch           INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id      TEXT NOT NULL REFERENCES clusters(id),
    rank            INTEGER NOT NULL,
    device_id       TEXT NOT NULL REFERENCES devices(id),
    node_hour_micros INTEGER NOT NULL DEFAULT 0,
    ray_head        INTEGER NOT NULL DEFAULT 0,
    ray_state       TEXT,
    ray_detail      TEXT,
    ray_restarts    INTEGER NOT NULL DEFAULT 0,
    joined_at       INTEGER NOT NULL,
    left_at         INTEGER,
    leave_reason    TEXT
);
INSERT INTO cluster_nodes_v2 (cluster_id, rank, device_id, node_hour_micros, ray_head, ray_state, ray_detail,
        ray_restarts, joined_at, left_at, leave_reason)
    SELECT n.cluster_id, n.rank, n.device_id, n.node_hour_micros, n.ray_head, n.ray_state, n.ray_detail,
        n.ray_restarts, c.created_at, c.ended_at, c.end_reason
    FROM cluster_nodes n JOIN clusters c ON c.id = n.cluster_id
    ORDER BY c.created_at, n.cluster_id, n.rank;
DROP TABLE cluster_nodes;
ALTER TABLE cluster_nodes_v2 RENAME TO cluster_nodes;
-- One current holder per rank; history is kept.
CREATE UNIQUE INDEX cluster_nodes_current ON cluster_nodes(cluster_id, rank) WHERE left_at IS NULL;
CREATE INDEX cluster_nodes_by_cluster ON cluster_nodes(cluster_id, rank);
CREATE INDEX cluster_nodes_by_device ON cluster_nodes(device_id, left_at);

-- How many ranks the cluster was leased with, and, while one is vacant, what herd is doing.
ALTER TABLE clusters ADD COLUMN nodes_wanted INTEGER NOT NULL DEFAULT 0;
UPDATE clusters SET nodes_wanted = (SELECT COUNT(*) FROM cluster_nodes n WHERE n.cluster_id = clusters.id);
ALTER TABLE clusters ADD COLUMN healing TEXT;
-- When the healer last failed to find a replacement (it waits a little before trying again).
ALTER TABLE clusters ADD COLUMN heal_tried_at INTEGER;

-- Job retries after a lost node: the current attempt, how many retries the customer allows,
-- and since when a new attempt waits for the cluster to heal (NULL: none waits).
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN retry_wanted_at INTEGER;
-- Ray jobs: the runtime_env (JSON), kept to resubmit the job to a re-formed cluster.
ALTER TABLE jobs ADD COLUMN runtime_env TEXT;
ALTER TABLE job_tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
CREATE INDEX jobs_waiting_retry ON jobs(retry_wanted_at) WHERE retry_wanted_at IS NOT NULL;
