-- Browser sessions of the consoles. The cookie carries a random 256-bit token; only its
-- SHA-256 is stored, like API keys, so a copy of the database signs nobody in.
CREATE TABLE web_sessions (
    token_hash  TEXT PRIMARY KEY,
    address     TEXT NOT NULL REFERENCES accounts(address),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX web_sessions_by_expiry ON web_sessions(expires_at);

-- One-time sign-in links `herd account login --browser` asks for by signing a challenge
-- with the account key. Stored hashed; single use; short-lived.
CREATE TABLE login_links (
    code_hash   TEXT PRIMARY KEY,
    address     TEXT NOT NULL REFERENCES accounts(address),
    expires_at  INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX login_links_by_expiry ON login_links(expires_at);
