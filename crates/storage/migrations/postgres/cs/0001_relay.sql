-- Duokey CS schema, version 1 (SPEC §6). Times are Unix milliseconds.
-- Applied by this role only (its own migration history, see migrate.rs).

-- CS: directory of users (certificate chain from the mTLS handshake) and
-- their signed delivery key records.
CREATE TABLE IF NOT EXISTS cs_users (
    user_id       TEXT PRIMARY KEY,
    cert_chain    BYTEA NOT NULL,
    delivery_key  BYTEA,
    updated_at_ms BIGINT NOT NULL
);

-- CS: per-user inboxes of signed items.
CREATE TABLE IF NOT EXISTS cs_inbox (
    cursor         BIGSERIAL PRIMARY KEY,
    recipient      TEXT NOT NULL,
    item_id        BYTEA NOT NULL,
    sender         TEXT NOT NULL,
    kind           BIGINT NOT NULL,
    item           BYTEA NOT NULL,
    received_at_ms BIGINT NOT NULL,
    UNIQUE (recipient, item_id)
);
CREATE INDEX IF NOT EXISTS cs_inbox_recipient ON cs_inbox (recipient, cursor);

-- CS: membership pushed by the GMS.
CREATE TABLE IF NOT EXISTS cs_groups (
    group_id       BYTEA PRIMARY KEY,
    rn2_version    BIGINT NOT NULL,
    deleted        BIGINT NOT NULL DEFAULT 0,
    retention_secs BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS cs_members (
    group_id BYTEA NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS cs_members_user ON cs_members (user_id);

-- CS: per-group ciphertext logs.
CREATE TABLE IF NOT EXISTS cs_log (
    group_id     BYTEA NOT NULL,
    log_seq      BIGINT NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BYTEA NOT NULL,
    stored_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, log_seq)
);
CREATE INDEX IF NOT EXISTS cs_log_age ON cs_log (stored_at_ms);
