ALTER TABLE runs ADD COLUMN monitor_id TEXT;
CREATE INDEX runs_monitor_idx ON runs (monitor_id);
CREATE TABLE rollbacks (
    subject TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    run_id TEXT NOT NULL,
    claimed_ms INTEGER NOT NULL,
    executed_by TEXT NOT NULL,
    outcome TEXT,
    error TEXT,
    finished_ms INTEGER
);
CREATE INDEX rollbacks_plan_idx ON rollbacks (plan_name, claimed_ms);
CREATE TABLE monitors (
    monitor_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_sealed BLOB NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    regions TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    rounds INTEGER NOT NULL,
    rollback TEXT,
    detail TEXT
);
CREATE TABLE monitor_rounds (
    monitor_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    per_check TEXT NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (monitor_id, round)
);
