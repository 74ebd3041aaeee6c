-- The session log: connections made through a gateway (PostgreSQL, SSH)
-- and what happened in each, as a chain of events per session. The
-- session row keeps the head of its chain (events, last_hash).
CREATE TABLE sessions (
	id          TEXT    NOT NULL PRIMARY KEY,
	kind        TEXT    NOT NULL,
	lease_id    TEXT    NOT NULL,
	request_id  TEXT    NOT NULL DEFAULT '',
	user_name   TEXT    NOT NULL,
	target      TEXT    NOT NULL,
	grant_name  TEXT    NOT NULL DEFAULT '',
	account     TEXT    NOT NULL DEFAULT '',
	client_addr TEXT    NOT NULL DEFAULT '',
	started_at  INTEGER NOT NULL,
	ended_at    INTEGER,
	end_reason  TEXT    NOT NULL DEFAULT '',
	data_json   TEXT,
	events      INTEGER NOT NULL DEFAULT 0,
	last_hash   TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE INDEX sessions_started ON sessions (started_at, id);
CREATE INDEX sessions_lease ON sessions (lease_id, started_at);
CREATE INDEX sessions_user ON sessions (user_name, started_at);

CREATE TABLE session_events (
	session_id TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	at         INTEGER NOT NULL,
	kind       TEXT    NOT NULL,
	body       TEXT,
	prev_hash  TEXT    NOT NULL,
	hash       TEXT    NOT NULL,
	PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
