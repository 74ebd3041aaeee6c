-- Initial schema. Times are integer Unix nanoseconds in UTC (NULL for the
-- zero time); durations are integer nanoseconds; lists and maps are JSON.

CREATE TABLE requests (
	id                 TEXT    NOT NULL PRIMARY KEY,
	requester          TEXT    NOT NULL,
	target             TEXT    NOT NULL,
	grant_name         TEXT    NOT NULL,
	reason             TEXT    NOT NULL,
	duration_ns        INTEGER NOT NULL,
	state              TEXT    NOT NULL,
	policy             TEXT    NOT NULL,
	approvals_required INTEGER NOT NULL,
	approver_groups    TEXT,
	approvers          TEXT,
	decider            TEXT    NOT NULL,
	decision_reason    TEXT    NOT NULL,
	created_at         INTEGER,
	decided_at         INTEGER,
	lease_id           TEXT    NOT NULL
);
CREATE INDEX requests_created ON requests (created_at, id);
CREATE INDEX requests_requester ON requests (requester, created_at, id);
CREATE INDEX requests_state ON requests (state, created_at, id);

CREATE TABLE leases (
	id              TEXT    NOT NULL PRIMARY KEY,
	request_id      TEXT    NOT NULL,
	requester       TEXT    NOT NULL,
	target          TEXT    NOT NULL,
	grant_name      TEXT    NOT NULL,
	username        TEXT    NOT NULL,
	state           TEXT    NOT NULL,
	created_at      INTEGER,
	expires_at      INTEGER,
	due_at          INTEGER,
	ended_at        INTEGER,
	end_reason      TEXT    NOT NULL,
	revoke_attempts INTEGER NOT NULL,
	last_error      TEXT    NOT NULL,
	secret_hmac     TEXT    NOT NULL
);
CREATE INDEX leases_state_due ON leases (state, due_at);
CREATE INDEX leases_request ON leases (request_id);
CREATE INDEX leases_requester ON leases (requester, created_at, id);
CREATE INDEX leases_target ON leases (target, created_at, id);
CREATE INDEX leases_username ON leases (username);
CREATE INDEX leases_created ON leases (created_at, id);

CREATE TABLE audit_events (
	seq        INTEGER NOT NULL PRIMARY KEY,
	time       INTEGER,
	actor      TEXT    NOT NULL,
	action     TEXT    NOT NULL,
	subject    TEXT    NOT NULL,
	target     TEXT    NOT NULL,
	request_id TEXT    NOT NULL,
	lease_id   TEXT    NOT NULL,
	reason     TEXT    NOT NULL,
	source     TEXT    NOT NULL,
	data       TEXT,
	prev_hash  TEXT    NOT NULL,
	hash       TEXT    NOT NULL
);
CREATE INDEX audit_lease ON audit_events (lease_id) WHERE lease_id <> '';
CREATE INDEX audit_request ON audit_events (request_id) WHERE request_id <> '';

CREATE TABLE users (
	name   TEXT NOT NULL PRIMARY KEY,
	status TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE settings (
	key   TEXT NOT NULL PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
