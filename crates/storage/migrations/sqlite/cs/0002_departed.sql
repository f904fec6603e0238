-- CS: members who departed a group (removed, left, or the group deleted) and
-- the last log position they were a member for. They may still fetch the
-- log up to it (to keep what was said while they were members), never past.
CREATE TABLE IF NOT EXISTS cs_departed (
    group_id BLOB NOT NULL,
    user_id  TEXT NOT NULL,
    upto_seq INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
