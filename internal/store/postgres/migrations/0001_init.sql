-- Initial schema, the PostgreSQL form of the SQLite store's migrations 1
-- to 7. Times are Unix nanoseconds in UTC (NULL for the zero time), as in
-- the SQLite store, so both keep the same precision and range; durations
-- are nanoseconds; lists and maps are JSON text. Identifiers sort
-- bytewise (COLLATE "C") whatever the database's collation, so lists and
-- cursors follow the same order as on SQLite.

CREATE TABLE requests (
	id                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	requester          TEXT    NOT NULL,
	target             TEXT    NOT NULL,
	grant_name         TEXT    NOT NULL,
	reason             TEXT    NOT NULL,
	duration_ns        BIGINT  NOT NULL,
	state              TEXT    NOT NULL,
	policy             TEXT    NOT NULL,
	approvals_required INTEGER NOT NULL,
	approver_groups    TEXT,
	steps              TEXT,
	step               INTEGER NOT NULL DEFAULT 0,
	step_approvals     INTEGER NOT NULL DEFAULT 0,
	approvers          TEXT,
	decider            TEXT    NOT NULL,
	decision_reason    TEXT    NOT NULL,
	created_at         BIGINT,
	decided_at         BIGINT,
	lease_id           TEXT    NOT NULL,
	extends_lease      TEXT    NOT NULL DEFAULT '',
	break_glass        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX requests_created ON requests (created_at, id);
CREATE INDEX requests_requester ON requests (requester, created_at, id);
CREATE INDEX requests_open ON requests (created_at, id)
	WHERE state = 'pending' OR (state = 'approved' AND lease_id = '');

CREATE TABLE leases (
	id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	request_id      TEXT    NOT NULL,
	requester       TEXT    NOT NULL,
	target          TEXT    NOT NULL,
	grant_name      TEXT    NOT NULL,
	username        TEXT    NOT NULL,
	state           TEXT    NOT NULL,
	created_at      BIGINT,
	expires_at      BIGINT,
	due_at          BIGINT,
	ended_at        BIGINT,
	end_reason      TEXT    NOT NULL,
	revoke_attempts INTEGER NOT NULL,
	last_error      TEXT    NOT NULL,
	secret_hmac     TEXT    NOT NULL
);
CREATE INDEX leases_state_due ON leases (state, due_at, id);
CREATE INDEX leases_requester ON leases (requester, created_at, id);
CREATE INDEX leases_username ON leases (username);
CREATE INDEX leases_created ON leases (created_at, id);

CREATE TABLE audit_events (
	seq        BIGINT NOT NULL PRIMARY KEY,
	time       BIGINT,
	actor      TEXT   NOT NULL,
	action     TEXT   NOT NULL,
	subject    TEXT   NOT NULL,
	target     TEXT   NOT NULL,
	request_id TEXT   NOT NULL,
	lease_id   TEXT   NOT NULL,
	reason     TEXT   NOT NULL,
	source     TEXT   NOT NULL,
	data       TEXT,
	prev_hash  TEXT   NOT NULL,
	hash       TEXT   NOT NULL
);
CREATE INDEX audit_lease ON audit_events (lease_id) WHERE lease_id <> '';
CREATE INDEX audit_request ON audit_events (request_id) WHERE request_id <> '';

-- The head of the audit chain: the sequence number and hash of the last
-- event appended. Every append locks this one row (SELECT … FOR UPDATE) in
-- the transaction of the state change it records, so appends from every
-- replica form one total order and one hash chain.
CREATE TABLE audit_head (
	one  BOOLEAN NOT NULL PRIMARY KEY DEFAULT TRUE CHECK (one),
	seq  BIGINT  NOT NULL,
	hash TEXT    NOT NULL
);
INSERT INTO audit_head (one, seq, hash) VALUES (TRUE, 0, '');

CREATE TABLE users (
	name   TEXT NOT NULL PRIMARY KEY,
	status TEXT NOT NULL
);

CREATE TABLE settings (
	key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	value TEXT NOT NULL
);

-- Lease counts by state, target and grant, kept by triggers in the
-- transaction that changes a lease, so /metrics reads a handful of rows.
-- Rows whose count falls to zero stay (there are few combinations).
CREATE TABLE lease_counts (
	state      TEXT   NOT NULL,
	target     TEXT   NOT NULL,
	grant_name TEXT   NOT NULL,
	n          BIGINT NOT NULL,
	PRIMARY KEY (state, target, grant_name)
);

CREATE FUNCTION lease_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		UPDATE lease_counts SET n = n - 1
			WHERE state = OLD.state AND target = OLD.target AND grant_name = OLD.grant_name;
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		INSERT INTO lease_counts (state, target, grant_name, n) VALUES (NEW.state, NEW.target, NEW.grant_name, 1)
			ON CONFLICT (state, target, grant_name) DO UPDATE SET n = lease_counts.n + 1;
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER lease_counts_insert AFTER INSERT ON leases
	FOR EACH ROW EXECUTE FUNCTION lease_counts_follow();
CREATE TRIGGER lease_counts_update AFTER UPDATE OF state, target, grant_name ON leases
	FOR EACH ROW WHEN (OLD.state <> NEW.state OR OLD.target <> NEW.target OR OLD.grant_name <> NEW.grant_name)
	EXECUTE FUNCTION lease_counts_follow();
CREATE TRIGGER lease_counts_delete AFTER DELETE ON leases
	FOR EACH ROW EXECUTE FUNCTION lease_counts_follow();

-- API and session tokens, kept as the hex SHA-256 of the token.
CREATE TABLE tokens (
	id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	name         TEXT   NOT NULL,
	user_name    TEXT   NOT NULL,
	kind         TEXT   NOT NULL,
	groups_json  TEXT,
	method       TEXT   NOT NULL,
	created_by   TEXT   NOT NULL,
	created_at   BIGINT,
	expires_at   BIGINT NOT NULL,
	last_used_at BIGINT,
	revoked_at   BIGINT,
	hash         TEXT   NOT NULL
);
CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE INDEX tokens_user ON tokens (user_name, created_at);
