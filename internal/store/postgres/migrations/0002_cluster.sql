-- Several replicas on one store. A due lease is claimed by the replica
-- that revokes it (claimed_by, until claim_until), so no two revoke it at
-- once; a claim lapses at its deadline, and recording an outcome (a
-- failed attempt counted, or the lease ended) clears it.
ALTER TABLE leases ADD COLUMN claimed_by TEXT;
ALTER TABLE leases ADD COLUMN claim_until BIGINT;

CREATE FUNCTION lease_claims_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.claimed_by IS NOT NULL AND (NEW.revoke_attempts <> OLD.revoke_attempts
		OR NEW.state NOT IN ('active', 'revoking', 'provisioning')) THEN
		NEW.claimed_by := NULL;
		NEW.claim_until := NULL;
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER lease_claims_clear BEFORE UPDATE OF state, revoke_attempts ON leases
	FOR EACH ROW EXECUTE FUNCTION lease_claims_clear();

-- Leader leases of the work that runs on one replica at a time.
CREATE TABLE leaders (
	name   TEXT   NOT NULL PRIMARY KEY,
	holder TEXT   NOT NULL,
	until  BIGINT NOT NULL
);

-- Replicas, as their heartbeats record them.
CREATE TABLE replicas (
	id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	address    TEXT   NOT NULL,
	version    TEXT   NOT NULL,
	started_at BIGINT,
	last_seen  BIGINT
);
