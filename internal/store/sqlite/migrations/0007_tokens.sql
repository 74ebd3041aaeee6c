-- API and session tokens, kept as the hex SHA-256 of the token: the
-- plaintext is shown once and never stored. Found by hash on every
-- request, listed and revoked by user.
CREATE TABLE tokens (
	id           TEXT    NOT NULL PRIMARY KEY,
	name         TEXT    NOT NULL,
	user_name    TEXT    NOT NULL,
	kind         TEXT    NOT NULL,
	groups_json  TEXT,
	method       TEXT    NOT NULL,
	created_by   TEXT    NOT NULL,
	created_at   INTEGER,
	expires_at   INTEGER NOT NULL,
	last_used_at INTEGER,
	revoked_at   INTEGER,
	hash         TEXT    NOT NULL
);
CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE INDEX tokens_user ON tokens (user_name, created_at);
