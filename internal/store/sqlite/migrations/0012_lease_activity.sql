-- When a lease was last seen in use at a gateway (Unix nanoseconds), so
-- that the idle check on any replica sees activity served by another.
ALTER TABLE leases ADD COLUMN activity_at INTEGER;
