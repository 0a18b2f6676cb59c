ALTER TABLE rollbacks ADD COLUMN action_kind TEXT;
CREATE INDEX rollbacks_pending_idx ON rollbacks (executed_by) WHERE outcome IS NULL OR outcome = 'pending';
ALTER TABLE monitor_rounds ADD COLUMN regions TEXT;
ALTER TABLE monitor_rounds ADD COLUMN counted BOOLEAN NOT NULL DEFAULT FALSE;
