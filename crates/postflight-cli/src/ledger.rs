//! The rollback ledger of local runs and monitors: a small JSON file, so that two `postflight`
//! processes never execute the same rollback or two rollbacks of one plan within its cooldown,
//! and an action that a crash interrupted is recorded as such and never run again.
//!
//! Location: `$POSTFLIGHT_STATE_DIR/rollbacks.json`, else `$XDG_STATE_HOME/postflight/`, else
//! `~/.local/state/postflight/`. Beside it:
//! - `rollbacks.lock`, held while the book is read and rewritten;
//! - `actions/<subject>.lock`, held by the process executing that action for as long as it
//!   runs. A claim without outcome whose lock nobody holds belongs to a process that died
//!   during its action: it is recorded `interrupted`.
//!
//! The book is never rewritten in place: a new copy is written, flushed to disk and renamed
//! over the old one, so a crash leaves either the old book or the new one, never half of each.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use postflight_plan::rollback::ActionOutcome;
use postflight_rollback::{ClaimOutcome, Ledger, RollbackClaim};
use serde::{Deserialize, Serialize};

/// Why the ledger file could not be read or written. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file or folder of the ledger could not be created, opened, locked, read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// "create", "open", "lock", "read", "write".
        action: &'static str,
        /// Which file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The book is not the JSON it should be.
    #[error("{} is damaged ({reason}); move it aside to start a new one", path.display())]
    Damaged {
        /// The book.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// The book could not be encoded (nothing is written then).
    #[error("cannot encode the ledger: {0}")]
    Encode(serde_json::Error),
    /// A claim's action lock is held but the book has no claim for it.
    #[error("the action lock of {subject} is held but the ledger has no claim for it")]
    Inconsistent {
        /// The claim's subject.
        subject: String,
    },
    /// The blocking task that does the file work did not finish (it panicked).
    #[error("the ledger's file task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError {
    let path = path.to_owned();
    move |source| LedgerError::Io {
        action,
        path,
        source,
    }
}

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
    #[serde(default)]
    action_kind: String,
    /// `None` (older files) or `pending` while the action runs.
    outcome: Option<ActionOutcome>,
    error: Option<String>,
}

impl Entry {
    fn is_pending(&self) -> bool {
        matches!(self.outcome, None | Some(ActionOutcome::Pending))
    }
}

/// An action found interrupted: its executor died while it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// The plan.
    pub plan: String,
    /// The run whose result triggered it.
    pub run_id: String,
    /// What the record now says.
    pub error: String,
}

/// The file ledger.
#[derive(Debug, Clone)]
pub struct FileLedger {
    dir: PathBuf,
    /// Locks of the actions this process is executing, by subject.
    holding: Arc<Mutex<HashMap<String, File>>>,
}

impl FileLedger {
    /// The ledger at its default location.
    pub fn default_location() -> Self {
        Self::at(crate::state::dir())
    }

    /// The ledger in `dir`.
    pub fn at(dir: PathBuf) -> Self {
        Self {
            dir,
            holding: Arc::default(),
        }
    }

    fn book_path(&self) -> PathBuf {
        self.dir.join("rollbacks.json")
    }

    fn action_lock(&self, subject: &str) -> PathBuf {
        let name: String = subject
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join("actions").join(format!("{name}.lock"))
    }

    /// Records `interrupted` for every claim whose executor is gone, and returns them. Runs
    /// before every change of the book too; calling it first lets the CLI say so.
    pub async fn recover(&self) -> Result<Vec<Interrupted>, LedgerError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.update(|_, recovered| recovered.to_vec())).await?
    }

    /// Reads, changes and rewrites the book under the ledger's lock, after recording
    /// interrupted actions; `change` also sees what was found interrupted.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Book, &[Interrupted]) -> T,
    ) -> Result<T, LedgerError> {
        std::fs::create_dir_all(&self.dir).map_err(io_error("create", &self.dir))?;
        let lock_path = self.dir.join("rollbacks.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        lock.lock().map_err(io_error("lock", &lock_path))?;
        let path = self.book_path();
        let mut book: Book = match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Book::default(),
            Ok(text) => serde_json::from_str(&text).map_err(|e| LedgerError::Damaged {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let recovered = self.mark_interrupted(&mut book);
        let result = change(&mut book, &recovered);
        let excess = book.rollbacks.len().saturating_sub(KEEP);
        book.rollbacks.drain(..excess);
        let text = serde_json::to_string_pretty(&book).map_err(LedgerError::Encode)?;
        crate::state::write_atomically(&path, text.as_bytes()).map_err(io_error("write", &path))?;
        drop(lock);
        Ok(result)
    }

    /// Pending entries whose action lock is free (or gone) were left by a process that died.
    fn mark_interrupted(&self, book: &mut Book) -> Vec<Interrupted> {
        let mut recovered = Vec::new();
        for entry in book.rollbacks.iter_mut().filter(|e| e.is_pending()) {
            let lock_path = self.action_lock(&entry.subject);
            let abandoned = match File::open(&lock_path) {
                Err(_) => true,
                Ok(file) => file.try_lock().is_ok(),
            };
            if !abandoned {
                continue;
            }
            let error = postflight_rollback::interrupted(&entry.executed_by, entry.claimed_ms);
            entry.outcome = Some(ActionOutcome::Interrupted);
            entry.error = Some(error.clone());
            let _ = std::fs::remove_file(&lock_path);
            recovered.push(Interrupted {
                plan: entry.plan.clone(),
                run_id: entry.run_id.clone(),
                error,
            });
        }
        recovered
    }

    /// Takes the lock that says "this process is executing `subject`"; `false` when someone
    /// holds it already (then the book has its claim, and this claim is refused there).
    fn hold(&self, subject: &str) -> Result<bool, LedgerError> {
        let path = self.action_lock(subject);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
        }
        if let Ok(mut holding) = self.holding.lock() {
            holding.insert(subject.to_owned(), file);
        }
        Ok(true)
    }

    fn release(&self, subject: &str) {
        let held = self.holding.lock().ok().and_then(|mut h| h.remove(subject));
        if held.is_some() {
            let _ = std::fs::remove_file(self.action_lock(subject));
        }
    }
}

impl Ledger for FileLedger {
    type Error = LedgerError;

    async fn claim(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> Result<ClaimOutcome, LedgerError> {
        let this = self.clone();
        let claim = claim.clone();
        tokio::task::spawn_blocking(move || {
            // Held before the claim is written: nobody may take it for an abandoned claim.
            let holding = this.hold(&claim.subject)?;
            let answer = this.update(|book, _| {
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
                    action_kind: claim.action_kind.clone(),
                    outcome: Some(ActionOutcome::Pending),
                    error: None,
                });
                ClaimOutcome::Claimed
            });
            match answer {
                Ok(ClaimOutcome::Claimed) if !holding => {
                    // Cannot happen: a held lock has its claim in the book already.
                    Err(LedgerError::Inconsistent {
                        subject: claim.subject.clone(),
                    })
                }
                Ok(ClaimOutcome::Claimed) => answer,
                _ => {
                    if holding {
                        this.release(&claim.subject);
                    }
                    answer
                }
            }
        })
        .await?
    }

    async fn finish(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        let this = self.clone();
        let (subject, error) = (subject.to_owned(), error.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            let written = this.update(|book, _| {
                if let Some(e) = book.rollbacks.iter_mut().find(|e| e.subject == subject) {
                    e.outcome = Some(outcome);
                    e.error = error;
                }
            });
            // Unrecorded, the claim stays pending: keep holding it while this process lives,
            // so nobody takes a finished action for an interrupted one meanwhile.
            if written.is_ok() {
                this.release(&subject);
            }
            written
        })
        .await?
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
            action_kind: "command".into(),
        }
    }

    fn book(dir: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/rollbacks.json")).unwrap())
            .unwrap()
    }

    #[tokio::test]
    async fn once_per_subject_and_never_within_the_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::at(dir.path().join("state"));
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
        // Both claims still run (this process holds their locks): nothing is interrupted.
        assert_eq!(ledger.recover().await.unwrap(), []);
        assert_eq!(book(dir.path())["rollbacks"][0]["outcome"], "pending");
        ledger
            .finish("run:1", ActionOutcome::Succeeded, None)
            .await
            .unwrap();
        assert_eq!(book(dir.path())["rollbacks"][0]["outcome"], "succeeded");
        assert!(
            !ledger.action_lock("run:1").exists(),
            "the action's lock goes with it"
        );
        std::fs::write(dir.path().join("state/rollbacks.json"), "{broken").unwrap();
        let err = ledger
            .claim(&claim("run:4", "p", 9999), 0)
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Damaged { .. }), "{err:?}");
        assert!(
            err.to_string().contains("rollbacks.json is damaged"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("state/rollbacks.json")).unwrap(),
            "{broken",
            "a damaged book is left as it was"
        );
    }

    /// A process that died during its action left a pending claim and a lock nobody holds:
    /// the next process to open the ledger records it interrupted, once.
    #[tokio::test]
    async fn a_claim_whose_executor_died_is_recorded_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let dead = FileLedger::at(state.clone());
        assert_eq!(
            dead.claim(&claim("run:9", "p", 5000), 0).await.unwrap(),
            ClaimOutcome::Claimed
        );
        // The process dies: its file descriptors (and so its lock) are gone.
        dead.holding.lock().unwrap().clear();
        let next = FileLedger::at(state);
        let found = next.recover().await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].plan.as_str(), found[0].run_id.as_str()),
            ("p", "r")
        );
        assert!(
            found[0]
                .error
                .starts_with("cli stopped while the action ran")
        );
        let written = book(dir.path());
        assert_eq!(written["rollbacks"][0]["outcome"], "interrupted");
        assert_eq!(next.recover().await.unwrap(), [], "recorded once");
        // It still counts for the cooldown: no second rollback of the plan.
        assert!(matches!(
            next.claim(&claim("run:10", "p", 5001), 60_000)
                .await
                .unwrap(),
            ClaimOutcome::CoolingDown { .. }
        ));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
