-- Issue 18 (DESIGN D51): password accounts (OPAQUE). A token may set up a
-- password instead of enrolling a certificate request.
ALTER TABLE enrol_tokens ADD COLUMN IF NOT EXISTS password_setup BIGINT NOT NULL DEFAULT 0;
-- Each password account's OPAQUE record: nothing else of the password.
CREATE TABLE IF NOT EXISTS as_passwords (
    user_id       TEXT PRIMARY KEY,
    record        BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- Logins between their two steps (the server's OPAQUE state), used once.
CREATE TABLE IF NOT EXISTS as_logins (
    login_id      BYTEA PRIMARY KEY,
    user_id       TEXT NOT NULL,
    state         BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
-- Wrong passwords, per account, for its limit.
CREATE TABLE IF NOT EXISTS as_login_failures (
    user_id TEXT NOT NULL,
    at_ms   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS as_login_failures_user ON as_login_failures (user_id, at_ms);
