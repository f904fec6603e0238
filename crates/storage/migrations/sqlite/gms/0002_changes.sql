-- GMS: the member-signed membership changes of every group (SPEC §4.7), in
-- order, with the actor's certificate chain (u32-length-prefixed DERs). They
-- hold no secret and are kept for the group's lifetime.
CREATE TABLE IF NOT EXISTS gms_changes (
    group_id    BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    change      BLOB NOT NULL,
    actor_chain BLOB NOT NULL,
    PRIMARY KEY (group_id, seq)
);
