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
-- Login attempts, for the limits per account and per client address: a
-- row per first step (each lets its client test one password guess, on its
-- own side), deleted when its login succeeds. A right password also clears
-- the account's earlier rows (`cleared`), not the address's: logging in to
-- one's own account must not reset the count of an address that guesses
-- other accounts' passwords.
CREATE TABLE IF NOT EXISTS as_login_attempts (
    login_id BYTEA NOT NULL,
    user_id  TEXT NOT NULL,
    addr     TEXT NOT NULL,
    at_ms    BIGINT NOT NULL,
    cleared  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS as_login_attempts_user ON as_login_attempts (user_id, at_ms);
CREATE INDEX IF NOT EXISTS as_login_attempts_addr ON as_login_attempts (addr, at_ms);
CREATE INDEX IF NOT EXISTS as_login_attempts_id ON as_login_attempts (login_id);
