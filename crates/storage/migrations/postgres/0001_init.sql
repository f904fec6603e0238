-- Duokey server schema v1 (SPEC §6). Every role's database holds the same
-- schema; each role uses its own tables. Times are Unix milliseconds.

-- AS: one-time enrolment tokens, stored as SHA-256 hashes (SPEC §2).
CREATE TABLE IF NOT EXISTS enrol_tokens (
    token_hash    BYTEA PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);

-- GMS: groups and their current state (SPEC §4).
CREATE TABLE IF NOT EXISTS gms_groups (
    group_id         BYTEA PRIMARY KEY,
    name             TEXT NOT NULL,
    rn2_version      BIGINT NOT NULL,
    rn1_version      BIGINT NOT NULL,
    policy           BYTEA NOT NULL,
    deleted          BIGINT NOT NULL DEFAULT 0,
    next_rotation_ms BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS gms_groups_rotation ON gms_groups (deleted, next_rotation_ms);

-- GMS: current members and rights.
CREATE TABLE IF NOT EXISTS gms_members (
    group_id          BYTEA NOT NULL,
    user_id           TEXT NOT NULL,
    rights            BIGINT NOT NULL,
    since_rn2_version BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS gms_members_user ON gms_members (user_id);

-- GMS: every grant issued (RN2 history, SPEC §4.5), as the encoded Grant.
CREATE TABLE IF NOT EXISTS gms_grants (
    group_id     BYTEA NOT NULL,
    rn2_version  BIGINT NOT NULL,
    grant_pb     BYTEA NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, rn2_version)
);

-- GMS: idempotency of ReportMember / Rotate by report_id.
CREATE TABLE IF NOT EXISTS gms_reports (
    report_id   BYTEA PRIMARY KEY,
    group_id    BYTEA NOT NULL,
    rn2_version BIGINT NOT NULL
);

-- GMS: users who lost membership (removed, left, deleted), for GetGrants.
CREATE TABLE IF NOT EXISTS gms_departures (
    group_id    BYTEA NOT NULL,
    user_id     TEXT NOT NULL,
    rn2_version BIGINT NOT NULL,
    cause       BIGINT NOT NULL,
    by_user     TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

-- GMS: membership the CS must learn (SPEC §5.4), retried until acknowledged.
CREATE TABLE IF NOT EXISTS gms_cs_outbox (
    group_id    BYTEA PRIMARY KEY,
    rn2_version BIGINT NOT NULL,
    synced      BIGINT NOT NULL DEFAULT 0
);

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
