CREATE TABLE probes (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    labels TEXT NOT NULL,
    version TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    plan_name TEXT NOT NULL,
    plan_sealed BLOB NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    regions TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    verdict TEXT,
    report TEXT,
    rollback TEXT
);
CREATE INDEX runs_created_idx ON runs (created_ms DESC);
CREATE INDEX runs_unfinished_idx ON runs (status) WHERE status IN ('pending', 'running');
CREATE TABLE assignments (
    assignment_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    status TEXT NOT NULL,
    expected_results INTEGER,
    detail TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX assignments_run_idx ON assignments (run_id);
CREATE TABLE results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    check_index INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    requests INTEGER NOT NULL,
    request_errors INTEGER NOT NULL,
    latency TEXT,
    sketch BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX results_run_idx ON results (run_id, seq);
