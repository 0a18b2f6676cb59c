//! The stage gate on the coordinator: a run at a stage reads the plan's earlier runs for the
//! same migration (the rule is `postflight_plan::stages`').

use postflight_plan::Overall;
use postflight_plan::stages::{StageRefused, StageRun, check_stage};

use super::*;

impl<S: Store> Coordinator<S> {
    /// The stage gate: `Ok(None)` when every earlier stage passed for the run's migration,
    /// `Ok(Some(refusal))` when `force` overrides a refusal (recorded in the report), else the
    /// refusal as `INVALID_ARGUMENT` naming the missing stage.
    pub(super) async fn stage_gate(
        &self,
        plan: &Plan,
        options: &RunOptions,
        stage: &str,
    ) -> CoordinatorResult<Option<String>> {
        let earlier = match &options.migration {
            Some(migration) => self
                .inner
                .store
                .migration_runs(&plan.name, migration)
                .await?
                .into_iter()
                .filter_map(|r| {
                    Some(StageRun {
                        stage: r.stage?,
                        status: r.verdict.as_deref().and_then(Overall::parse),
                        run_id: r.run_id,
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        match check_stage(plan, options.migration.as_deref(), stage, &earlier) {
            Ok(()) => Ok(None),
            Err(refused @ StageRefused::EarlierStageMissing { .. }) if options.force => {
                tracing::warn!(plan = %plan.name, stage, "stage gate overridden with force: {refused}");
                Ok(Some(refused.to_string()))
            }
            Err(refused) => Err(CoordinatorError::invalid(
                "options.stage",
                refused.to_string(),
            )),
        }
    }
}
