-- DESIGN D51: wrong passwords are counted at each login's first step (the
-- client can test its guess on that answer alone), per account and per
-- client address, instead of at failed second steps. A row per first step,
-- recorded before it is counted, deleted when its login succeeds (or when
-- it was refused); a right password also clears the account's earlier rows
-- (`cleared`), not the address's.
DROP TABLE IF EXISTS as_login_failures;
CREATE TABLE IF NOT EXISTS as_login_attempts (
    login_id BLOB NOT NULL,
    user_id  TEXT NOT NULL,
    addr     TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    cleared  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS as_login_attempts_user ON as_login_attempts (user_id, at_ms);
CREATE INDEX IF NOT EXISTS as_login_attempts_addr ON as_login_attempts (addr, at_ms);
CREATE INDEX IF NOT EXISTS as_login_attempts_id ON as_login_attempts (login_id);
CREATE INDEX IF NOT EXISTS as_login_attempts_at ON as_login_attempts (at_ms);
CREATE INDEX IF NOT EXISTS as_logins_expiry ON as_logins (expires_at_ms);
