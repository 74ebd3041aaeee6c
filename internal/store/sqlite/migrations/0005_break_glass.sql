-- A request taken as break-glass access says so, so lists and reports can
-- show it without reading the audit trail. Earlier ones are marked from
-- their request.create event.
ALTER TABLE requests ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;
UPDATE requests SET break_glass = 1 WHERE id IN (
	SELECT request_id FROM audit_events
	WHERE action = 'request.create' AND request_id <> '' AND json_extract(data, '$.break_glass') = 'true');
