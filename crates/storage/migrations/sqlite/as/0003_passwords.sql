-- Issue 18 (DESIGN D51): password accounts (OPAQUE). A token may set up a
-- password instead of enrolling a certificate request.
ALTER TABLE enrol_tokens ADD COLUMN password_setup INTEGER NOT NULL DEFAULT 0;
-- Each password account's OPAQUE record: nothing else of the password.
CREATE TABLE IF NOT EXISTS as_passwords (
    user_id       TEXT PRIMARY KEY,
    record        BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
-- Logins between their two steps (the server's OPAQUE state), used once.
CREATE TABLE IF NOT EXISTS as_logins (
    login_id      BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL,
    state         BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
-- Wrong passwords, per account, for its limit.
CREATE TABLE IF NOT EXISTS as_login_failures (
    user_id TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS as_login_failures_user ON as_login_failures (user_id, at_ms);
