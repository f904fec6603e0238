-- AS: certificates it issued (issue 14: re-enrolment is explicit). A token
-- for a user who holds a valid one (not expired, not revoked) must say
-- `replace_cert`; the replaced certificates are then revoked.
CREATE TABLE IF NOT EXISTS as_certs (
    serial       BYTEA PRIMARY KEY,
    user_id      TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS as_certs_user ON as_certs (user_id);
ALTER TABLE enrol_tokens ADD COLUMN IF NOT EXISTS replace_cert BIGINT NOT NULL DEFAULT 0;
