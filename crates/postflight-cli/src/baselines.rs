//! `postflight baseline` and `postflight baselines`, and where local baselines are kept: one
//! JSON file each under `<state>/baselines/`, at most [`KEEP_PER_PLAN`] per plan (the oldest
//! go first).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::{Table, presets};
use postflight_plan::baseline::Baseline;

use postflight_proto::v1;

use crate::cli::{BaselineArgs, BaselinesArgs, Output};
use crate::{EXIT_PLAN_ERROR, local, plan_file, remote, render};

/// A baseline as listings show it (local or on a coordinator).
#[derive(Debug, Clone, serde::Serialize)]
struct Summary {
    baseline_id: String,
    plan: String,
    migration: Option<String>,
    created_at: String,
    run_id: String,
    status: String,
    checks: usize,
    latencies: usize,
}

impl From<&Baseline> for Summary {
    fn from(b: &Baseline) -> Self {
        Self {
            baseline_id: b.baseline_id.clone(),
            plan: b.plan.clone(),
            migration: b.migration.clone(),
            created_at: b.created_at.clone(),
            run_id: b.run_id.clone(),
            status: b.status.as_str().to_owned(),
            checks: b.checks.len(),
            latencies: b.latencies(),
        }
    }
}

impl From<v1::BaselineSummary> for Summary {
    fn from(b: v1::BaselineSummary) -> Self {
        Self {
            baseline_id: b.baseline_id,
            plan: b.plan,
            migration: (!b.migration.is_empty()).then_some(b.migration),
            created_at: b.created_at,
            run_id: b.run_id,
            status: b.status,
            checks: b.checks as usize,
            latencies: b.latencies as usize,
        }
    }
}

/// `postflight baseline PLAN`: runs the plan (here with `--local`, else on a coordinator) and
/// keeps what it measured, unless the run failed or was inconclusive.
pub async fn take(args: BaselineArgs) -> anyhow::Result<ExitCode> {
    let plan = match plan_file::load(&args.plan, args.local) {
        Ok(plan) => plan,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::from(EXIT_PLAN_ERROR));
        }
    };
    let (report, stored) = if args.local {
        let show_progress = std::io::stderr().is_terminal();
        let round = local::round(
            &plan,
            args.timeout,
            usize::from(args.concurrency),
            show_progress,
            None,
        )
        .await?;
        let id = uuid::Uuid::now_v7().to_string();
        let stored = match Baseline::of_run(
            id,
            &round.report,
            args.migration.clone(),
            round.measured,
        ) {
            Ok(baseline) => {
                let path = LocalBaselines::default_location().save(&baseline)?;
                tracing::info!(baseline = %baseline.baseline_id, path = %path.display(), "baseline stored");
                Ok(Summary::from(&baseline))
            }
            Err(refused) => Err(refused.to_string()),
        };
        (round.report, stored)
    } else {
        match remote::take_baseline(&args, &plan).await {
            Ok((report, stored)) => (report, stored.map(Summary::from)),
            Err(failure) => return Ok(failure.exit()),
        }
    };
    let code = ExitCode::from(report.status.exit_code());
    let against = if args.local { " --local" } else { "" };
    match (stored, args.output) {
        (Err(refused), output) => {
            print!(
                "{}",
                render::report(&report, output, render::stdout_color())
            );
            eprintln!("error: {refused}");
        }
        (Ok(summary), Output::Json) => {
            let both = serde_json::json!({ "baseline": summary, "report": report });
            println!("{}", serde_json::to_string_pretty(&both)?);
        }
        (Ok(summary), Output::Table) => {
            print!(
                "{}",
                render::report(&report, Output::Table, render::stdout_color())
            );
            println!(
                "baseline {} stored: {} latencies of {} checks; compare later runs with `postflight run {}{against} --against {}` (or `--against latest`)",
                summary.baseline_id,
                summary.latencies,
                summary.checks,
                args.plan.display(),
                summary.baseline_id
            );
        }
    }
    Ok(code)
}

/// `postflight baselines`: the CLI's own (`--local`) or a coordinator's.
pub async fn list(args: &BaselinesArgs) -> ExitCode {
    let found: Vec<Summary> = if args.local {
        match LocalBaselines::default_location().list() {
            Ok(found) => found
                .iter()
                .filter(|b| args.plan.as_ref().is_none_or(|p| &b.plan == p))
                .map(Summary::from)
                .collect(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(crate::EXIT_NO_RUN);
            }
        }
    } else {
        match remote::baselines(args.coordinator.as_deref(), args.plan.as_deref()).await {
            Ok(found) => found.into_iter().map(Summary::from).collect(),
            Err(failure) => return failure.exit(),
        }
    };
    match args.output {
        Output::Json => {
            let text = serde_json::to_string_pretty(&serde_json::json!({ "baselines": found }))
                .unwrap_or_default();
            println!("{text}");
        }
        Output::Table => {
            if found.is_empty() {
                println!("no baselines yet: take one with `postflight baseline PLAN`");
                return ExitCode::SUCCESS;
            }
            let mut table = Table::new();
            table.load_preset(presets::NOTHING).set_header([
                "BASELINE",
                "PLAN",
                "MIGRATION",
                "TAKEN",
                "STATUS",
                "CHECKS",
                "LATENCIES",
            ]);
            if !std::io::stdout().is_terminal() {
                table.force_no_tty();
            }
            for b in found {
                table.add_row(vec![
                    b.baseline_id,
                    b.plan,
                    b.migration.unwrap_or_else(|| "—".to_owned()),
                    b.created_at,
                    b.status,
                    b.checks.to_string(),
                    b.latencies.to_string(),
                ]);
            }
            for line in table.to_string().lines() {
                println!("{}", line.trim_end());
            }
        }
    }
    ExitCode::SUCCESS
}

/// The local baseline `id` (or `latest`) to compare runs of `plan` with, or why there is
/// none (the message names what to do).
pub fn local_against(id: &str, plan: &postflight_plan::model::Plan) -> Result<Baseline, String> {
    let baseline = LocalBaselines::default_location()
        .find(id, &plan.name)
        .map_err(|e| e.to_string())?;
    if baseline.plan != plan.name {
        return Err(format!(
            "baseline {} is of plan {}, not {}",
            baseline.baseline_id, baseline.plan, plan.name
        ));
    }
    Ok(baseline)
}

/// Baselines kept per plan.
pub const KEEP_PER_PLAN: usize = 50;

/// Why a baseline could not be stored, found or read. The message names the file or the id.
#[derive(Debug, thiserror::Error)]
pub enum BaselineStoreError {
    /// The folder or a file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// "create", "read", "write", "list".
        action: &'static str,
        /// Which file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file is not a baseline.
    #[error("{} is not a readable baseline ({reason}); move it aside", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// No baseline has this id, or the plan has none for `latest`.
    #[error("{0}")]
    NotFound(String),
}

/// The local baselines.
#[derive(Debug, Clone)]
pub struct LocalBaselines {
    dir: PathBuf,
}

impl LocalBaselines {
    /// Under the CLI's state folder.
    pub fn default_location() -> Self {
        Self {
            dir: crate::state::dir().join("baselines"),
        }
    }

    fn io(
        action: &'static str,
        path: PathBuf,
    ) -> impl FnOnce(std::io::Error) -> BaselineStoreError {
        move |source| BaselineStoreError::Io {
            action,
            path,
            source,
        }
    }

    /// Stores `baseline`, then forgets its plan's oldest beyond [`KEEP_PER_PLAN`]; returns the
    /// file.
    pub fn save(&self, baseline: &Baseline) -> Result<PathBuf, BaselineStoreError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("create", self.dir.clone()))?;
        let path = self.dir.join(format!("{}.json", baseline.baseline_id));
        let text = serde_json::to_vec(baseline).map_err(|e| BaselineStoreError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::state::write_atomically(&path, &text).map_err(Self::io("write", path.clone()))?;
        let mut same_plan: Vec<Baseline> = self
            .list()?
            .into_iter()
            .filter(|b| b.plan == baseline.plan)
            .collect();
        // Newest first: ids are UUID v7.
        for old in same_plan.drain(..).skip(KEEP_PER_PLAN) {
            let _ = std::fs::remove_file(self.dir.join(format!("{}.json", old.baseline_id)));
        }
        Ok(path)
    }

    /// Every baseline, newest first. Files that are not baselines are skipped with a warning.
    pub fn list(&self) -> Result<Vec<Baseline>, BaselineStoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("list", self.dir.clone())(e)),
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match self.read(&path) {
                Ok(baseline) => found.push(baseline),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        found.sort_by(|a, b| b.baseline_id.cmp(&a.baseline_id));
        Ok(found)
    }

    fn read(&self, path: &std::path::Path) -> Result<Baseline, BaselineStoreError> {
        let text = std::fs::read(path).map_err(Self::io("read", path.to_owned()))?;
        serde_json::from_slice(&text).map_err(|e| BaselineStoreError::Damaged {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The baseline `id`, or with `latest` the newest of `plan`.
    pub fn find(&self, id: &str, plan: &str) -> Result<Baseline, BaselineStoreError> {
        if id == "latest" {
            return self
                .list()?
                .into_iter()
                .find(|b| b.plan == plan)
                .ok_or_else(|| {
                    BaselineStoreError::NotFound(format!(
                        "plan {plan} has no baseline yet: take one with `postflight baseline PLAN --local` before the change"
                    ))
                });
        }
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let path = self.dir.join(format!("{id}.json"));
        if !valid || !path.exists() {
            return Err(BaselineStoreError::NotFound(format!(
                "no baseline {id} (see `postflight baselines --local`)"
            )));
        }
        self.read(&path)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use postflight_plan::Overall;

    use super::*;

    fn baseline(id: &str, plan: &str) -> Baseline {
        Baseline {
            baseline_id: id.into(),
            plan: plan.into(),
            migration: None,
            created_at: "2026-12-01T00:00:00Z".into(),
            run_id: format!("run-{id}"),
            status: Overall::Pass,
            checks: BTreeMap::new(),
        }
    }

    #[test]
    fn baselines_are_found_by_id_or_as_the_latest_of_their_plan() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBaselines {
            dir: dir.path().join("baselines"),
        };
        assert!(store.list().unwrap().is_empty());
        for (id, plan) in [("01-a", "p"), ("02-b", "q"), ("03-c", "p")] {
            store.save(&baseline(id, plan)).unwrap();
        }
        assert_eq!(store.find("latest", "p").unwrap().baseline_id, "03-c");
        assert_eq!(store.find("01-a", "p").unwrap().plan, "p");
        let none = store.find("latest", "r").unwrap_err().to_string();
        assert!(none.starts_with("plan r has no baseline yet"), "{none}");
        let missing = store.find("../etc/passwd", "p").unwrap_err().to_string();
        assert_eq!(
            missing,
            "no baseline ../etc/passwd (see `postflight baselines --local`)"
        );
        std::fs::write(dir.path().join("baselines/zz.json"), "{broken").unwrap();
        assert_eq!(store.list().unwrap().len(), 3, "a damaged file is skipped");
        let damaged = store.find("zz", "p").unwrap_err().to_string();
        assert!(damaged.contains("is not a readable baseline"), "{damaged}");
    }

    #[test]
    fn each_plan_keeps_its_newest_baselines() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBaselines {
            dir: dir.path().to_owned(),
        };
        for i in 0..KEEP_PER_PLAN + 3 {
            store.save(&baseline(&format!("{i:04}"), "p")).unwrap();
        }
        store.save(&baseline("0000-q", "q")).unwrap();
        let kept = store.list().unwrap();
        assert_eq!(kept.iter().filter(|b| b.plan == "p").count(), KEEP_PER_PLAN);
        assert!(
            kept.iter()
                .filter(|b| b.plan == "p")
                .all(|b| b.baseline_id.as_str() >= "0003")
        );
        assert!(kept.iter().any(|b| b.plan == "q"), "other plans are kept");
    }
}
