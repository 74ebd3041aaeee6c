-- session_events becomes an ordinary (rowid) table. As a WITHOUT ROWID
-- table its rows were the keys of its B-tree, and terminal recordings make
-- rows of many kilobytes: every insert's search read whole overflow chains
-- to compare keys. Now the key (session_id, seq) sits in a small index and
-- the bodies are appended at the end of the table.
CREATE TABLE session_events_rowid (
	session_id TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	at         INTEGER NOT NULL,
	kind       TEXT    NOT NULL,
	body       TEXT,
	prev_hash  TEXT    NOT NULL,
	hash       TEXT    NOT NULL,
	PRIMARY KEY (session_id, seq)
);
INSERT INTO session_events_rowid (session_id, seq, at, kind, body, prev_hash, hash)
	SELECT session_id, seq, at, kind, body, prev_hash, hash FROM session_events ORDER BY session_id, seq;
DROP TABLE session_events;
ALTER TABLE session_events_rowid RENAME TO session_events;
