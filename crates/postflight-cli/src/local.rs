//! `run --local`: the plan executed in this process as the single region `local`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use postflight_checks::{Executor, RunOptions, run_plan};
use postflight_plan::baseline::{self, Baseline, Measurements};
use postflight_plan::model::Plan;
use postflight_plan::rollback::{RollbackContext, RunEnd};

use crate::ledger::FileLedger;
use postflight_plan::report::{RegionResult, Report, RunResults, build_report};
use postflight_plan::vars::ProcessEnv;
use postflight_plan::verdict::LOCAL_REGION;

/// Runs `plan` locally, builds its report and carries out the rollback decision (at most
/// once per run, never within the plan's cooldown, nothing executed with `dry_run`, nothing
/// executed on a run cut off by `timeout`). `timeout` bounds the whole run: checks still
/// running then have no result, which makes them inconclusive, never a pass.
/// With `against`, each check is also compared with that baseline and fails when it is worse.
pub async fn run(
    plan: &Plan,
    timeout: Option<Duration>,
    concurrency: usize,
    show_progress: bool,
    dry_run: bool,
    against: Option<&Baseline>,
) -> anyhow::Result<Report> {
    let ledger = FileLedger::default_location();
    let earlier = interrupted_notes(&ledger, plan).await;
    let Round { mut report, .. } =
        round(plan, timeout, concurrency, show_progress, against).await?;
    report.rollback.held_back.extend(earlier);
    report.rollback.dry_run |= dry_run;
    let context = rollback_context(plan, &report, None);
    let subject = format!("run:{}", report.run_id);
    postflight_rollback::carry_out(
        plan,
        &mut report.rollback,
        &context,
        &subject,
        &ledger,
        &ProcessEnv,
    )
    .await;
    Ok(report)
}

/// Records actions that a dead process left running as interrupted, warns about them, and
/// returns a note for each that concerns `plan` (for its report).
pub async fn interrupted_notes(ledger: &FileLedger, plan: &Plan) -> Vec<String> {
    match ledger.recover().await {
        Ok(found) => found
            .into_iter()
            .filter_map(|i| {
                eprintln!(
                    "warning: the rollback of plan {} (run {}) was interrupted: {}",
                    i.plan, i.run_id, i.error
                );
                (i.plan == plan.name).then(|| {
                    format!(
                        "an earlier rollback of this plan (run {}) was interrupted: {}",
                        i.run_id, i.error
                    )
                })
            })
            .collect(),
        Err(e) => {
            eprintln!("warning: cannot read the rollback ledger: {e}");
            Vec::new()
        }
    }
}

/// Who executes rollbacks from this process, in audit records.
pub fn identity() -> String {
    format!("postflight CLI on {}", postflight_ops::host::hostname())
}

/// What a rollback action is told about a decision taken on `report`.
pub fn rollback_context(plan: &Plan, report: &Report, monitor_id: Option<&str>) -> RollbackContext {
    RollbackContext::of(plan, report, monitor_id, &identity(), SystemTime::now())
}

/// What one local execution of a plan produced.
pub struct Round {
    /// Its report (no rollback carried out yet).
    pub report: Report,
    /// Per check, the region `local`'s result (for a monitor's window).
    pub results: Vec<BTreeMap<String, RegionResult>>,
    /// Whether the timeout cut it off.
    pub end: RunEnd,
    /// What each check measured (for a baseline).
    pub measured: Measurements,
}

/// One local execution of `plan`; with `against`, compared with that baseline (checks that
/// are worse fail, and the report's `baseline` section says why).
pub async fn round(
    plan: &Plan,
    timeout: Option<Duration>,
    concurrency: usize,
    show_progress: bool,
    against: Option<&Baseline>,
) -> anyhow::Result<Round> {
    let run_id = uuid::Uuid::now_v7().to_string();
    let executor = Executor::new().map_err(anyhow::Error::msg)?;
    let started_at = SystemTime::now();
    let progress = progress_bar(plan.checks.len(), show_progress);
    let options = RunOptions {
        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        concurrency,
    };
    tracing::info!(run_id = %run_id, plan = %plan.name, checks = plan.checks.len(), "local run started");
    let outcomes = run_plan(&executor, plan, options, |index, outcome| {
        let name = &plan.checks[index].name;
        tracing::debug!(check = %name, status = %outcome.status, "check finished");
        progress.inc(1);
        progress.set_message(format!("{name}: {}", outcome.status));
    })
    .await;
    progress.finish_and_clear();
    let finished_at = SystemTime::now();
    let mut per_check: Vec<BTreeMap<String, RegionResult>> = outcomes
        .iter()
        .map(|o| {
            o.iter()
                .map(|o| (LOCAL_REGION.to_owned(), RegionResult::from_outcome(o)))
                .collect()
        })
        .collect();
    let measured: Measurements = baseline::measurements(plan, &per_check);
    let comparison = match against {
        Some(baseline) => {
            let compared = baseline::compare(plan, baseline, &measured)?;
            baseline::apply(plan, &compared, &mut per_check);
            Some(compared)
        }
        None => None,
    };
    let regions = [LOCAL_REGION.to_owned()];
    let end = if outcomes.iter().any(Option::is_none) {
        RunEnd::TimedOut
    } else {
        RunEnd::Completed
    };
    let mut report = build_report(&RunResults {
        plan,
        run_id: &run_id,
        started_at,
        finished_at,
        required_regions: &regions,
        results: &per_check,
        unreported: &BTreeMap::new(),
        end,
        env: &ProcessEnv,
    });
    report.baseline = comparison;
    Ok(Round {
        report,
        results: per_check,
        end,
        measured,
    })
}

fn progress_bar(len: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} running checks {pos}/{len} {wide_msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
