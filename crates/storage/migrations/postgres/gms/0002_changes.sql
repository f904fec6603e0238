-- GMS: the member-signed membership changes of every group (SPEC §4.7), in
-- order, with the actor's certificate chain (u32-length-prefixed DERs). They
-- hold no secret and are kept for the group's lifetime.
CREATE TABLE IF NOT EXISTS gms_changes (
    group_id    BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    change      BYTEA NOT NULL,
    actor_chain BYTEA NOT NULL,
    PRIMARY KEY (group_id, seq)
);
