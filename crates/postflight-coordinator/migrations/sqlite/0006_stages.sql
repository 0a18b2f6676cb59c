-- A run's stage, and the stage gate's refusal that --force overrode.
ALTER TABLE runs ADD COLUMN stage TEXT;
ALTER TABLE runs ADD COLUMN forced TEXT;
CREATE INDEX runs_migration_idx ON runs (plan_name, migration);
