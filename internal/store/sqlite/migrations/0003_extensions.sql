-- A request may extend an existing lease instead of creating one.
ALTER TABLE requests ADD COLUMN extends_lease TEXT NOT NULL DEFAULT '';
