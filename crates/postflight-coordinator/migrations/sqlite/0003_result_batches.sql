-- The per-result table of version 1 is kept (renamed), never dropped: a migration
-- must not lose data. Results are stored in batches from now on.
ALTER TABLE results RENAME TO results_v1;
CREATE TABLE result_batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    region TEXT NOT NULL,
    probe TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    results INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX result_batches_run_idx ON result_batches (run_id, seq);
