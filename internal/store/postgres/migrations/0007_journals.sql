-- Append-only journals of lines, for state replicas share that is not a
-- store record of its own: the SSH connector's issued and revoked
-- certificates. A journal's lock and head are the setting
-- 'journal.<name>' (GetSetting in a write transaction locks it).
CREATE TABLE journals (
	name TEXT COLLATE "C" NOT NULL,
	seq BIGINT NOT NULL,
	line TEXT NOT NULL,
	PRIMARY KEY (name, seq)
);
