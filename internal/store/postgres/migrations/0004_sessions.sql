-- The session log: connections made through a gateway (PostgreSQL, SSH)
-- and what happened in each, as a chain of events per session. The
-- session row keeps the head of its chain (events, last_hash). Bodies are
-- TEXT, not JSONB: they are hashed as stored.
CREATE TABLE sessions (
	id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	kind        TEXT   NOT NULL,
	lease_id    TEXT COLLATE "C" NOT NULL,
	request_id  TEXT   NOT NULL DEFAULT '',
	user_name   TEXT   NOT NULL,
	target      TEXT   NOT NULL,
	grant_name  TEXT   NOT NULL DEFAULT '',
	account     TEXT   NOT NULL DEFAULT '',
	client_addr TEXT   NOT NULL DEFAULT '',
	started_at  BIGINT NOT NULL,
	ended_at    BIGINT,
	end_reason  TEXT   NOT NULL DEFAULT '',
	data_json   TEXT,
	events      BIGINT NOT NULL DEFAULT 0,
	last_hash   TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX sessions_started ON sessions (started_at, id);
CREATE INDEX sessions_lease ON sessions (lease_id, started_at);
CREATE INDEX sessions_user ON sessions (user_name, started_at);

CREATE TABLE session_events (
	session_id TEXT COLLATE "C" NOT NULL,
	seq        BIGINT NOT NULL,
	at         BIGINT NOT NULL,
	kind       TEXT   NOT NULL,
	body       TEXT,
	prev_hash  TEXT   NOT NULL,
	hash       TEXT   NOT NULL,
	PRIMARY KEY (session_id, seq)
);
