-- Ray clusters: the kind of each cluster, each node's Ray node, Ray jobs.
ALTER TABLE clusters ADD COLUMN kind TEXT NOT NULL DEFAULT 'plain';
ALTER TABLE clusters ADD COLUMN ray_version TEXT;
-- The head's GCS address (HOST:PORT) while it runs; workers join it.
ALTER TABLE clusters ADD COLUMN ray_gcs_address TEXT;
ALTER TABLE cluster_nodes ADD COLUMN ray_head INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cluster_nodes ADD COLUMN ray_state TEXT;            -- NULL outside Ray clusters
ALTER TABLE cluster_nodes ADD COLUMN ray_detail TEXT;
ALTER TABLE cluster_nodes ADD COLUMN ray_restarts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'command';
ALTER TABLE jobs ADD COLUMN message TEXT;
