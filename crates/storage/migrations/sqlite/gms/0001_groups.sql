-- Duokey GMS schema, version 1 (SPEC §6). Times are Unix milliseconds.
-- Applied by this role only (its own migration history, see migrate.rs).

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
