-- CS: each post's message id, so that a post sent again (its answer was
-- lost: a node died, the network broke) is recognised and answered with
-- its first position instead of being stored twice (issue 17). Posts
-- stored before have none (NULL, never equal).
ALTER TABLE cs_log ADD COLUMN IF NOT EXISTS msg_id BYTEA;
CREATE UNIQUE INDEX IF NOT EXISTS cs_log_msg_id ON cs_log (group_id, msg_id);
