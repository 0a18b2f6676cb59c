-- Runs carry their migration label and their baseline requests; baselines are kept per plan.
ALTER TABLE runs ADD COLUMN migration TEXT;
ALTER TABLE runs ADD COLUMN against TEXT;
ALTER TABLE runs ADD COLUMN take_baseline INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN baseline_id TEXT;
ALTER TABLE runs ADD COLUMN baseline_refused TEXT;
CREATE TABLE baselines (
    baseline_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    migration TEXT,
    created_ms INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    checks INTEGER NOT NULL,
    latencies INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX baselines_plan_idx ON baselines (plan_name, created_ms);
