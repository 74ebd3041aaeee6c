-- Session events move to chunks of many events per row (see chunks.go
-- for the line format): a busy gateway writes one row per session per
-- write instead of one per statement. Every existing event becomes a chunk
-- of one, its line built exactly as the Go code builds it.
CREATE TABLE session_event_chunks (
	session_id TEXT    NOT NULL,
	first_seq  INTEGER NOT NULL,
	last_seq   INTEGER NOT NULL,
	prev_hash  TEXT    NOT NULL,
	events     TEXT    NOT NULL,
	PRIMARY KEY (session_id, first_seq)
);
INSERT INTO session_event_chunks (session_id, first_seq, last_seq, prev_hash, events)
	SELECT session_id, seq, seq, prev_hash,
		seq || ' ' || at || ' ' || hash || ' ' || json_quote(kind) ||
		CASE WHEN body IS NULL OR body = '' THEN '' ELSE ' ' || body END || char(10)
	FROM session_events ORDER BY session_id, seq;
DROP TABLE session_events;
