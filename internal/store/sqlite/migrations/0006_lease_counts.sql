-- Lease counts by state, target and grant, kept by triggers in the
-- transaction that changes a lease, so /metrics reads a handful of rows
-- instead of counting every lease ever issued on each scrape. Rows whose
-- count falls to zero stay (there are few combinations).
CREATE TABLE lease_counts (
	state      TEXT    NOT NULL,
	target     TEXT    NOT NULL,
	grant_name TEXT    NOT NULL,
	n          INTEGER NOT NULL,
	PRIMARY KEY (state, target, grant_name)
) WITHOUT ROWID;

INSERT INTO lease_counts (state, target, grant_name, n)
	SELECT state, target, grant_name, COUNT(*) FROM leases GROUP BY state, target, grant_name;

CREATE TRIGGER lease_counts_insert AFTER INSERT ON leases BEGIN
	INSERT INTO lease_counts (state, target, grant_name, n) VALUES (new.state, new.target, new.grant_name, 1)
		ON CONFLICT (state, target, grant_name) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER lease_counts_update AFTER UPDATE OF state, target, grant_name ON leases
	WHEN old.state <> new.state OR old.target <> new.target OR old.grant_name <> new.grant_name BEGIN
	UPDATE lease_counts SET n = n - 1
		WHERE state = old.state AND target = old.target AND grant_name = old.grant_name;
	INSERT INTO lease_counts (state, target, grant_name, n) VALUES (new.state, new.target, new.grant_name, 1)
		ON CONFLICT (state, target, grant_name) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER lease_counts_delete AFTER DELETE ON leases BEGIN
	UPDATE lease_counts SET n = n - 1
		WHERE state = old.state AND target = old.target AND grant_name = old.grant_name;
END;
