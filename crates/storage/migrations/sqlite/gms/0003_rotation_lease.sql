-- GMS: a lease on a group's periodic rotation (issue 17). A GMS node
-- claims due groups by setting it (on PostgreSQL with FOR UPDATE SKIP
-- LOCKED, so two nodes never claim the same group); a node that dies with
-- a claim leaves it to expire, and the group is due again for the others.
ALTER TABLE gms_groups ADD COLUMN rotation_lease_ms BIGINT NOT NULL DEFAULT 0;
