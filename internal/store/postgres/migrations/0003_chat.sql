-- Where the chat message about a request (the Slack approval message) is,
-- so it is updated in place as the request is decided.
CREATE TABLE chat_messages (
	request_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	channel    TEXT   NOT NULL,
	ts         TEXT   NOT NULL,
	updated_at BIGINT
);

-- Signatures of signed requests seen lately, so a replay is refused by
-- every replica.
CREATE TABLE nonces (
	key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	until BIGINT NOT NULL
);
CREATE INDEX nonces_until ON nonces (until);
