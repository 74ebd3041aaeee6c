-- Several replicas on one store. A due lease is claimed by the replica
-- that revokes it (claimed_by, until claim_until), so no two revoke it at
-- once; a claim lapses at its deadline, and recording an outcome (a
-- failed attempt counted, or the lease ended) clears it.
ALTER TABLE leases ADD COLUMN claimed_by TEXT;
ALTER TABLE leases ADD COLUMN claim_until INTEGER;

CREATE TRIGGER lease_claims_clear AFTER UPDATE OF state, revoke_attempts ON leases
	WHEN new.claimed_by IS NOT NULL AND (new.revoke_attempts <> old.revoke_attempts
		OR new.state NOT IN ('active', 'revoking', 'provisioning')) BEGIN
	UPDATE leases SET claimed_by = NULL, claim_until = NULL WHERE id = new.id;
END;

-- Leader leases of the work that runs on one replica at a time.
CREATE TABLE leaders (
	name   TEXT    NOT NULL PRIMARY KEY,
	holder TEXT    NOT NULL,
	until  INTEGER NOT NULL
) WITHOUT ROWID;

-- Replicas, as their heartbeats record them.
CREATE TABLE replicas (
	id         TEXT    NOT NULL PRIMARY KEY,
	address    TEXT    NOT NULL,
	version    TEXT    NOT NULL,
	started_at INTEGER,
	last_seen  INTEGER
) WITHOUT ROWID;
