//! The local runs that carry a migration label (`run --local --migration M [--stage S]`), one
//! JSON line each in `<state>/runs.jsonl`: what the stage gate of later local runs reads.
//! Lines are appended whole (one `write` in append mode), so concurrent runs never mix them;
//! an unreadable line is skipped.

use std::io::Write;
use std::path::PathBuf;

use postflight_plan::Overall;
use postflight_plan::stages::StageRun;
use serde::{Deserialize, Serialize};

/// Lines kept: older ones are dropped when the file grows past twice this.
const KEEP: usize = 1000;

/// One local run with a migration label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The plan.
    pub plan: String,
    /// The migration.
    pub migration: String,
    /// The stage, when one was given.
    pub stage: Option<String>,
    /// The run.
    pub run_id: String,
    /// Its verdict.
    pub status: Overall,
}

/// The local run history.
#[derive(Debug, Clone)]
pub struct LocalHistory {
    path: PathBuf,
}

impl LocalHistory {
    /// Under the CLI's state folder.
    pub fn default_location() -> Self {
        Self {
            path: crate::state::dir().join("runs.jsonl"),
        }
    }

    /// Appends `entry`; keeps the file bounded.
    pub fn record(&self, entry: &Entry) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)?;
        let entries = self.entries();
        if entries.len() > 2 * KEEP {
            let mut text = Vec::new();
            for e in &entries[entries.len() - KEEP..] {
                text.extend(serde_json::to_vec(e).map_err(std::io::Error::other)?);
                text.push(b'\n');
            }
            crate::state::write_atomically(&self.path, &text)?;
        }
        Ok(())
    }

    fn entries(&self) -> Vec<Entry> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The plan's earlier runs at a stage for `migration`.
    pub fn stage_runs(&self, plan: &str, migration: &str) -> Vec<StageRun> {
        self.entries()
            .into_iter()
            .filter(|e| e.plan == plan && e.migration == migration)
            .filter_map(|e| {
                Some(StageRun {
                    stage: e.stage?,
                    run_id: e.run_id,
                    status: Some(e.status),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_by_plan_and_migration_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let history = LocalHistory {
            path: dir.path().join("runs.jsonl"),
        };
        let entry = |plan: &str, migration: &str, stage: Option<&str>, id: &str| Entry {
            plan: plan.into(),
            migration: migration.into(),
            stage: stage.map(Into::into),
            run_id: id.into(),
            status: Overall::Pass,
        };
        history
            .record(&entry("p", "m", Some("staging"), "r1"))
            .unwrap();
        history
            .record(&entry("p", "other", Some("staging"), "r2"))
            .unwrap();
        history
            .record(&entry("q", "m", Some("staging"), "r3"))
            .unwrap();
        history.record(&entry("p", "m", None, "r4")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&history.path)
            .unwrap()
            .write_all(b"{broken\n")
            .unwrap();
        let found = history.stage_runs("p", "m");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].run_id, "r1");
        for i in 0..2 * KEEP {
            history
                .record(&entry("p", "m", None, &format!("x{i}")))
                .unwrap();
        }
        assert!(history.entries().len() <= 2 * KEEP);
    }
}
