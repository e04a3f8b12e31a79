-- Single-use codes an owner issues so a device can join their account from a machine that
-- does not hold the owner's key. Stored hashed, like API keys.
CREATE TABLE pairing_codes (
    code_hash   TEXT PRIMARY KEY,
    owner       TEXT NOT NULL REFERENCES accounts(address),
    expires_at  INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pairing_codes_by_expiry ON pairing_codes(expires_at);
