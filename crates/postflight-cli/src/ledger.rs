//! The rollback ledger of local runs and monitors: a small JSON file, locked while it is
//! read and written, so that two `postflight` processes never execute the same rollback or
//! two rollbacks of one plan within its cooldown.
//!
//! Location: `$POSTFLIGHT_STATE_DIR/rollbacks.json`, else `$XDG_STATE_HOME/postflight/`, else
//! `~/.local/state/postflight/`.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use postflight_rollback::{ClaimOutcome, Ledger, RollbackClaim};
use serde::{Deserialize, Serialize};

/// Entries kept; older ones no longer matter for any cooldown worth having.
const KEEP: usize = 1000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    rollbacks: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    subject: String,
    plan: String,
    run_id: String,
    executed_by: String,
    claimed_ms: i64,
    outcome: Option<String>,
    error: Option<String>,
}

/// The file ledger.
#[derive(Debug, Clone)]
pub struct FileLedger {
    path: PathBuf,
}

impl FileLedger {
    /// The ledger at its default location.
    pub fn default_location() -> Self {
        let dir = std::env::var_os("POSTFLIGHT_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("postflight"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/postflight"))
            })
            .unwrap_or_else(|| PathBuf::from(".postflight"));
        Self {
            path: dir.join("rollbacks.json"),
        }
    }

    /// Reads, changes and writes the book under an exclusive lock.
    fn update<T>(&self, change: impl FnOnce(&mut Book) -> T) -> Result<T, String> {
        let shown = self.path.display();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| format!("cannot open {shown}: {e}"))?;
        file.lock()
            .map_err(|e| format!("cannot lock {shown}: {e}"))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut book: Book = if text.trim().is_empty() {
            Book::default()
        } else {
            serde_json::from_str(&text).map_err(|e| {
                format!("{shown} is damaged ({e}); move it aside to start a new one")
            })?
        };
        let result = change(&mut book);
        let excess = book.rollbacks.len().saturating_sub(KEEP);
        book.rollbacks.drain(..excess);
        let text = serde_json::to_string_pretty(&book).map_err(|e| e.to_string())?;
        file.set_len(0)
            .map_err(|e| format!("cannot write {shown}: {e}"))?;
        file.rewind()
            .map_err(|e| format!("cannot write {shown}: {e}"))?;
        file.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {shown}: {e}"))?;
        Ok(result)
    }
}

impl Ledger for FileLedger {
    async fn claim(&self, claim: &RollbackClaim, cooldown_ms: i64) -> Result<ClaimOutcome, String> {
        let this = self.clone();
        let claim = claim.clone();
        tokio::task::spawn_blocking(move || {
            this.update(|book| {
                if let Some(e) = book.rollbacks.iter().find(|e| e.subject == claim.subject) {
                    return ClaimOutcome::AlreadyClaimed {
                        by: e.executed_by.clone(),
                        at_ms: e.claimed_ms,
                    };
                }
                if let Some(e) = book.rollbacks.iter().rev().find(|e| {
                    e.plan == claim.plan_name && e.claimed_ms > claim.claimed_ms - cooldown_ms
                }) {
                    return ClaimOutcome::CoolingDown {
                        by: e.executed_by.clone(),
                        at_ms: e.claimed_ms,
                        run_id: e.run_id.clone(),
                    };
                }
                book.rollbacks.push(Entry {
                    subject: claim.subject.clone(),
                    plan: claim.plan_name.clone(),
                    run_id: claim.run_id.clone(),
                    executed_by: claim.executed_by.clone(),
                    claimed_ms: claim.claimed_ms,
                    outcome: None,
                    error: None,
                });
                ClaimOutcome::Claimed
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn finish(
        &self,
        subject: &str,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), String> {
        let this = self.clone();
        let (subject, outcome, error) = (
            subject.to_owned(),
            outcome.to_owned(),
            error.map(str::to_owned),
        );
        tokio::task::spawn_blocking(move || {
            this.update(|book| {
                if let Some(e) = book.rollbacks.iter_mut().find(|e| e.subject == subject) {
                    e.outcome = Some(outcome);
                    e.error = error;
                }
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(subject: &str, plan: &str, at: i64) -> RollbackClaim {
        RollbackClaim {
            subject: subject.into(),
            plan_name: plan.into(),
            run_id: "r".into(),
            executed_by: "cli".into(),
            claimed_ms: at,
        }
    }

    #[tokio::test]
    async fn once_per_subject_and_never_within_the_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger {
            path: dir.path().join("state/rollbacks.json"),
        };
        assert_eq!(
            ledger.claim(&claim("run:1", "p", 1000), 500).await.unwrap(),
            ClaimOutcome::Claimed
        );
        assert!(matches!(
            ledger.claim(&claim("run:1", "p", 1001), 500).await.unwrap(),
            ClaimOutcome::AlreadyClaimed { .. }
        ));
        assert!(matches!(
            ledger.claim(&claim("run:2", "p", 1400), 500).await.unwrap(),
            ClaimOutcome::CoolingDown { .. }
        ));
        assert_eq!(
            ledger.claim(&claim("run:3", "p", 1501), 500).await.unwrap(),
            ClaimOutcome::Claimed
        );
        ledger.finish("run:1", "succeeded", None).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("state/rollbacks.json")).unwrap();
        assert!(text.contains("\"outcome\": \"succeeded\""), "{text}");
        std::fs::write(dir.path().join("state/rollbacks.json"), "{broken").unwrap();
        let err = ledger
            .claim(&claim("run:4", "p", 9999), 0)
            .await
            .unwrap_err();
        assert!(err.contains("is damaged"), "{err}");
    }
}
