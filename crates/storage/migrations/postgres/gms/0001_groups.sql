-- Duokey GMS schema, version 1 (SPEC §6). Times are Unix milliseconds.
-- Applied by this role only (its own migration history, see migrate.rs).

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
