-- Logins in progress (OpenID Connect states and nonces, finished logins
-- waiting for their CLI, ID tokens already used), single-use and
-- short-lived, kept in the store so that any replica can finish them.
CREATE TABLE login_states (
	key        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	value      BYTEA  NOT NULL,
	expires_at BIGINT NOT NULL
);

CREATE INDEX login_states_expiry ON login_states (expires_at);
