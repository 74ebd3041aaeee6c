-- Where the chat message about a request (the Slack approval message) is,
-- so it is updated in place as the request is decided.
CREATE TABLE chat_messages (
	request_id TEXT    NOT NULL PRIMARY KEY,
	channel    TEXT    NOT NULL,
	ts         TEXT    NOT NULL,
	updated_at INTEGER
) WITHOUT ROWID;

-- Signatures of signed requests seen lately, so a replay is refused.
CREATE TABLE nonces (
	key   TEXT    NOT NULL PRIMARY KEY,
	until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX nonces_until ON nonces (until);
