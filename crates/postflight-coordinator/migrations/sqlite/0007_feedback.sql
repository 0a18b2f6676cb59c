-- Feedback about migrations.
CREATE TABLE feedback (
    feedback_id TEXT PRIMARY KEY,
    migration TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX feedback_migration_idx ON feedback (migration, created_ms);
