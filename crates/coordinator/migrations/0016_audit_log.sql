-- Every privileged or money-moving action: who, what, on what, when, from where, and the
-- signature that authorised it. Append-only: triggers refuse every UPDATE and DELETE, so not
-- even a bug in the coordinator can rewrite it. `action_id` is the single-use id of an
-- operator-signed action (a second use is refused before anything happens; this is the
-- durable backstop).
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    detail     TEXT NOT NULL,
    origin     TEXT,
    signature  TEXT,
    action_id  TEXT UNIQUE
);
CREATE INDEX audit_log_by_target ON audit_log(target, seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
