-- Multi-step approval: every step (JSON), the current step and the
-- approvals counted within it.
ALTER TABLE requests ADD COLUMN steps TEXT;
ALTER TABLE requests ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN step_approvals INTEGER NOT NULL DEFAULT 0;
