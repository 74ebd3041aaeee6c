-- Logins in progress (OpenID Connect states and nonces, finished logins
-- waiting for their CLI, ID tokens already used), single-use and
-- short-lived, kept in the store so that any replica can finish them.
CREATE TABLE login_states (
	key        TEXT    NOT NULL PRIMARY KEY,
	value      BLOB    NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX login_states_expiry ON login_states (expires_at);
