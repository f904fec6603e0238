-- Duokey terminal profile v1 (SPEC §6). Secrets are sealed by the vault.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    group_id    BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,          -- active | removed | left | deleted
    rn2_version INTEGER NOT NULL,
    rn1_version INTEGER NOT NULL,
    log_cursor  INTEGER NOT NULL DEFAULT 0,
    send_epoch  TEXT NOT NULL DEFAULT '',
    next_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS grants (
    group_id     BLOB NOT NULL,
    rn2_version  INTEGER NOT NULL,
    rn1_version  INTEGER NOT NULL,
    rn2          BLOB NOT NULL,         -- sealed
    members      TEXT NOT NULL,         -- JSON [[user, rights], ...]
    issued_at_ms INTEGER NOT NULL,
    rn1_rotator  TEXT NOT NULL,
    cause        INTEGER NOT NULL,
    subject      TEXT NOT NULL,
    grace_secs   INTEGER NOT NULL,
    retention_secs INTEGER NOT NULL,
    PRIMARY KEY (group_id, rn2_version)
);
CREATE TABLE IF NOT EXISTS r1 (
    group_id    BLOB NOT NULL,
    rn1_version INTEGER NOT NULL,
    rn2_version INTEGER NOT NULL,       -- the version the sealed R1 is at
    secret      BLOB NOT NULL,          -- sealed
    PRIMARY KEY (group_id, rn1_version)
);
-- SPEC §4.7: RN1 versions whose R1 this terminal erased after the grace
-- window; a rotation item for one of them is refused (never taken again).
CREATE TABLE IF NOT EXISTS r1_erased (
    group_id    BLOB NOT NULL,
    rn1_version INTEGER NOT NULL,
    erased_ms   INTEGER NOT NULL,
    PRIMARY KEY (group_id, rn1_version)
);
CREATE TABLE IF NOT EXISTS rn1_sent (
    group_id    BLOB NOT NULL,
    rn1_version INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    PRIMARY KEY (group_id, rn1_version, user_id)
);
CREATE TABLE IF NOT EXISTS messages (
    group_id     BLOB NOT NULL,
    log_seq      INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    body         BLOB NOT NULL,         -- sealed
    content_type INTEGER NOT NULL,
    sent_at_ms   INTEGER NOT NULL,
    rn1_version  INTEGER NOT NULL,
    rn2_version  INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    msg_id       BLOB NOT NULL,
    PRIMARY KEY (group_id, log_seq),
    UNIQUE (group_id, msg_id),
    UNIQUE (group_id, sender, rn1_version, rn2_version, seq)
);
CREATE TABLE IF NOT EXISTS notices (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    text     TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS items_seen (item_id BLOB PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invites_in (
    invite_id  BLOB PRIMARY KEY,
    group_id   BLOB NOT NULL,
    group_name TEXT NOT NULL,
    from_user  TEXT NOT NULL,
    rights     INTEGER NOT NULL,
    state      TEXT NOT NULL,           -- pending | accepted | declined | joined
    secret     BLOB                     -- sealed X25519 key of the ack
);
CREATE TABLE IF NOT EXISTS invites_out (
    invite_id   BLOB PRIMARY KEY,
    group_id    BLOB NOT NULL,
    invitee     TEXT NOT NULL,
    rights      INTEGER NOT NULL,
    state       TEXT NOT NULL,          -- sent | reported | done | declined
    rn1_version INTEGER NOT NULL DEFAULT 0,
    join_version INTEGER NOT NULL DEFAULT 0,
    invite_pub  BLOB                    -- the invitee's key for this invitation
);
-- SPEC §2, DESIGN D46: the serial of the certificate that certified each contact's
-- identity key, to check against the organisation's revocation list (meta
-- `revoked_serials`, refreshed at every sync).
CREATE TABLE IF NOT EXISTS contact_serials (
    user_id      TEXT NOT NULL,
    identity_key BLOB NOT NULL,
    serial       BLOB NOT NULL,
    PRIMARY KEY (user_id, identity_key)
);
CREATE TABLE IF NOT EXISTS contacts (
    user_id      TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    fingerprint  BLOB NOT NULL,
    verified     INTEGER NOT NULL DEFAULT 0,
    changed_key  BLOB
);
-- D29: contacts' delivery keys, each checked against the identity key it
-- was signed with; public values, reused for a day (DELIVERY_KEY_TTL_MS).
CREATE TABLE IF NOT EXISTS delivery_keys (
    user_id      TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    delivery_key BLOB NOT NULL,
    checked_ms   INTEGER NOT NULL
);
-- DESIGN D38: this terminal's previous delivery secrets (sealed),
-- kept DELIVERY_KEY_KEEP_MS after they were replaced, then erased.
CREATE TABLE IF NOT EXISTS delivery_retired (
    public     BLOB PRIMARY KEY,
    secret     BLOB NOT NULL,
    retired_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id  BLOB NOT NULL,
    body      BLOB NOT NULL,            -- sealed
    queued_ms INTEGER NOT NULL
);
-- The envelope posted for a queued message whose answer never came: a
-- ciphertext as the CS holds it, posted again as it is (DESIGN D49).
CREATE TABLE IF NOT EXISTS outbox_attempts (
    outbox_id INTEGER PRIMARY KEY,
    envelope  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS stale_sent (
    group_id    BLOB NOT NULL,
    user_id     TEXT NOT NULL,
    rn2_version INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id, rn2_version)
);
-- SPEC §4.7: the group's signed membership changes this terminal verified, in order.
CREATE TABLE IF NOT EXISTS membership (
    group_id BLOB NOT NULL,
    seq      INTEGER NOT NULL,
    change   BLOB NOT NULL,
    PRIMARY KEY (group_id, seq)
);
-- SPEC §4.7: the change an invitation's R1 hand-over names (sent as an anchor).
CREATE TABLE IF NOT EXISTS anchors_out (
    invite_id BLOB PRIMARY KEY,
    seq       INTEGER NOT NULL,
    head      BLOB NOT NULL
);
-- SPEC §4.7: anchors received, the latest per (group, sender).
CREATE TABLE IF NOT EXISTS anchors_in (
    group_id       BLOB NOT NULL,
    sender         TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    head           BLOB NOT NULL,
    at_rn2_version INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender)
);
-- SPEC §4.7 "Equivocation": a member's signed anchor naming another head
-- than this terminal's at the same seq. Evidence, kept; the group stops
-- sending while one exists.
CREATE TABLE IF NOT EXISTS forks (
    group_id   BLOB NOT NULL,
    sender     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    their_head BLOB NOT NULL,
    my_head    BLOB NOT NULL,
    seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender, seq)
);
-- Items that cannot be processed yet (an RN1 rotation whose change or grant
-- has not reached this terminal): retried at every sync until `rn1_wait`.
CREATE TABLE IF NOT EXISTS items_pending (
    item_id  BLOB PRIMARY KEY,
    item     BLOB NOT NULL,
    since_ms INTEGER NOT NULL
);
-- PROTOCOL §4.10, DESIGN D50: invite codes. `out`: the code and the SPAKE2
-- seed (sealed), wrong answers so far, dead after three. `in`: the
-- inviter's SPAKE2 message, then (sealed) the inviter's tag this terminal
-- expects, and whether it came.
CREATE TABLE IF NOT EXISTS invite_codes (
    invite_id     BLOB PRIMARY KEY,
    side          TEXT NOT NULL,           -- out | in
    sealed        BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    tries         INTEGER NOT NULL DEFAULT 0,
    dead          INTEGER NOT NULL DEFAULT 0,
    expected_tag  BLOB,
    confirmed     INTEGER NOT NULL DEFAULT 0
);
-- Identity keys confirmed by an invite code, per contact.
CREATE TABLE IF NOT EXISTS contact_codes (
    user_id      TEXT NOT NULL,
    identity_key BLOB NOT NULL,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (user_id, identity_key)
);
