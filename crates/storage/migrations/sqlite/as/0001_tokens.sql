-- Duokey AS schema, version 1 (SPEC §6). Times are Unix milliseconds.
-- Applied by this role only (its own migration history, see migrate.rs).

-- AS: one-time enrolment tokens, stored as SHA-256 hashes (SPEC §2).
CREATE TABLE IF NOT EXISTS enrol_tokens (
    token_hash    BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
);
