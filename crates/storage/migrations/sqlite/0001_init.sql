-- Duokey server schema v1 (SPEC §6). Every role's database holds the same
-- schema; each role uses its own tables. Times are Unix milliseconds.

-- AS: one-time enrolment tokens, stored as SHA-256 hashes (SPEC §2).
CREATE TABLE IF NOT EXISTS enrol_tokens (
    token_hash    BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
);

-- GMS: groups and their current state (SPEC §4).
CREATE TABLE IF NOT EXISTS gms_groups (
    group_id         BLOB PRIMARY KEY,
    name             TEXT NOT NULL,
    rn2_version      INTEGER NOT NULL,
    rn1_version      INTEGER NOT NULL,
    policy           BLOB NOT NULL,
    deleted          INTEGER NOT NULL DEFAULT 0,
    next_rotation_ms INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gms_groups_rotation ON gms_groups (deleted, next_rotation_ms);

-- GMS: current members and rights.
CREATE TABLE IF NOT EXISTS gms_members (
    group_id          BLOB NOT NULL,
    user_id           TEXT NOT NULL,
    rights            INTEGER NOT NULL,
    since_rn2_version INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS gms_members_user ON gms_members (user_id);

-- GMS: every grant issued (RN2 history, SPEC §4.5), as the encoded Grant.
CREATE TABLE IF NOT EXISTS gms_grants (
    group_id     BLOB NOT NULL,
    rn2_version  INTEGER NOT NULL,
    grant_pb     BLOB NOT NULL,
    issued_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, rn2_version)
);

-- GMS: idempotency of ReportMember / Rotate by report_id.
CREATE TABLE IF NOT EXISTS gms_reports (
    report_id   BLOB PRIMARY KEY,
    group_id    BLOB NOT NULL,
    rn2_version INTEGER NOT NULL
);

-- GMS: users who lost membership (removed, left, deleted), for GetGrants.
CREATE TABLE IF NOT EXISTS gms_departures (
    group_id    BLOB NOT NULL,
    user_id     TEXT NOT NULL,
    rn2_version INTEGER NOT NULL,
    cause       INTEGER NOT NULL,
    by_user     TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

-- GMS: membership the CS must learn (SPEC §5.4), retried until acknowledged.
CREATE TABLE IF NOT EXISTS gms_cs_outbox (
    group_id    BLOB PRIMARY KEY,
    rn2_version INTEGER NOT NULL,
    synced      INTEGER NOT NULL DEFAULT 0
);

-- CS: directory of users (certificate chain from the mTLS handshake) and
-- their signed delivery key records.
CREATE TABLE IF NOT EXISTS cs_users (
    user_id       TEXT PRIMARY KEY,
    cert_chain    BLOB NOT NULL,
    delivery_key  BLOB,
    updated_at_ms INTEGER NOT NULL
);

-- CS: per-user inboxes of signed items.
CREATE TABLE IF NOT EXISTS cs_inbox (
    cursor         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient      TEXT NOT NULL,
    item_id        BLOB NOT NULL,
    sender         TEXT NOT NULL,
    kind           INTEGER NOT NULL,
    item           BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (recipient, item_id)
);
CREATE INDEX IF NOT EXISTS cs_inbox_recipient ON cs_inbox (recipient, cursor);

-- CS: membership pushed by the GMS.
CREATE TABLE IF NOT EXISTS cs_groups (
    group_id       BLOB PRIMARY KEY,
    rn2_version    INTEGER NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    retention_secs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cs_members (
    group_id BLOB NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS cs_members_user ON cs_members (user_id);

-- CS: per-group ciphertext logs.
CREATE TABLE IF NOT EXISTS cs_log (
    group_id     BLOB NOT NULL,
    log_seq      INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, log_seq)
);
CREATE INDEX IF NOT EXISTS cs_log_age ON cs_log (stored_at_ms);
