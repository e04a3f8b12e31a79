-- Docker runtime: a job may name its container image and narrow its lease's limits.
ALTER TABLE jobs ADD COLUMN image TEXT;
ALTER TABLE jobs ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';   -- JSON JobLimits
