//! Baselines on the coordinator: a run submitted with `take_baseline` keeps what it measured
//! when it passes; a run submitted `against` a baseline is compared with it at its end, and
//! checks that are worse fail (the rules are `postflight_plan::baseline`'s).

use postflight_plan::baseline::{self, Baseline, BaselineReport};
use postflight_plan::report::Report;

use super::*;
use crate::storage::BaselineRecord;

/// Baselines listed at most at once.
pub const MAX_BASELINES_PAGE: u32 = 1000;

impl<S: Store> Coordinator<S> {
    /// The baseline `id`, or with `latest` the newest of `plan`, for a run of `plan`.
    pub(super) async fn baseline_for(&self, plan: &Plan, id: &str) -> CoordinatorResult<Baseline> {
        let record = if id == "latest" {
            self.inner
                .store
                .list_baselines(Some(&plan.name), 1)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    CoordinatorError::invalid(
                        "options.against",
                        format!(
                            "plan {} has no baseline yet: take one before the change (`postflight baseline PLAN`)",
                            plan.name
                        ),
                    )
                })?
        } else {
            self.inner
                .store
                .get_baseline(id)
                .await?
                .ok_or_else(|| CoordinatorError::NotFound(format!("no baseline with id {id}")))?
        };
        if record.plan_name != plan.name {
            return Err(CoordinatorError::invalid(
                "options.against",
                format!(
                    "baseline {} is of plan {}, not {}",
                    record.baseline_id, record.plan_name, plan.name
                ),
            ));
        }
        serde_json::from_str(&record.data).map_err(|e| {
            CoordinatorError::Store(crate::storage::StoreError::Corrupt {
                field: "baselines.data",
                reason: e.to_string(),
            })
        })
    }

    /// Baselines, newest first, optionally of one plan.
    pub async fn list_baselines(
        &self,
        plan: Option<&str>,
        limit: u32,
    ) -> CoordinatorResult<Vec<BaselineRecord>> {
        let limit = page_limit(limit, MAX_BASELINES_PAGE)?;
        Ok(self.inner.store.list_baselines(plan, limit).await?)
    }

    /// At a run's end, before its report: the comparison with the baseline it asked for, with
    /// worse checks failed in `results`. A baseline that can no longer be read gives no
    /// comparison (and a line in the log), never a failed check.
    pub(super) async fn compare_with_baseline(
        &self,
        plan: &Plan,
        baseline_id: &str,
        results: &mut [BTreeMap<String, RegionResult>],
    ) -> Option<BaselineReport> {
        let compared = match self.baseline_for(plan, baseline_id).await {
            Ok(baseline) => {
                baseline::compare(plan, &baseline, &baseline::measurements(plan, results))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match compared {
            Ok(compared) => {
                baseline::apply(plan, &compared, results);
                Some(compared)
            }
            Err(e) => {
                tracing::error!(baseline = baseline_id, error = %e, "cannot compare with the baseline");
                None
            }
        }
    }

    /// At a run's end, after its report: keeps what it measured as a baseline if it passed,
    /// else records why not.
    pub(super) async fn keep_baseline(
        &self,
        record: &mut RunRecord,
        plan: &Plan,
        report: &Report,
        results: &[BTreeMap<String, RegionResult>],
    ) {
        let id = uuid::Uuid::now_v7().to_string();
        let measured = baseline::measurements(plan, results);
        let taken = match Baseline::of_run(id, report, record.migration.clone(), measured) {
            Ok(taken) => taken,
            Err(refused) => {
                record.baseline_refused = Some(refused.to_string());
                return;
            }
        };
        let row = BaselineRecord {
            baseline_id: taken.baseline_id.clone(),
            plan_name: taken.plan.clone(),
            migration: taken.migration.clone(),
            created_ms: now_ms(),
            run_id: taken.run_id.clone(),
            status: taken.status.as_str().to_owned(),
            checks: taken.checks.len() as i64,
            latencies: taken.latencies() as i64,
            data: serde_json::to_string(&taken).unwrap_or_default(),
        };
        match self.inner.store.insert_baseline(&row).await {
            Ok(()) => {
                tracing::info!(baseline = %row.baseline_id, plan = %row.plan_name, run_id = %row.run_id, "baseline stored");
                record.baseline_id = Some(row.baseline_id);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a baseline");
                record.baseline_refused = Some(format!("the baseline could not be stored: {e}"));
            }
        }
    }
}
