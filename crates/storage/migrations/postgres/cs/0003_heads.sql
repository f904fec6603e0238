-- CS: each group's last log position, kept apart from the log (issue 17).
-- Posts take their positions from this row in the transaction that stores
-- them, so positions never repeat: not after retention has erased the
-- whole log (a restart used to number from 1 again, and terminals whose
-- cursor was past that skipped the new posts), not between CS nodes that
-- share a database (the row serialises their appends to a group).
CREATE TABLE IF NOT EXISTS cs_log_heads (
    group_id BYTEA PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO cs_log_heads (group_id, last_seq)
    SELECT group_id, MAX(log_seq) FROM cs_log GROUP BY group_id;
