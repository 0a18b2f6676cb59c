//! Stages: a migration goes through environments in order (`stages: [staging, production]`),
//! and a run at a stage is refused until the same plan passed, for the same migration, at
//! every earlier stage. "Passed" means PASS or WARN: the run did not fail and had its data.

use crate::model::Plan;
use crate::verdict::Overall;

/// An earlier run of the plan for the same migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRun {
    /// Its stage.
    pub stage: String,
    /// Its id.
    pub run_id: String,
    /// Its verdict (`None` while it runs).
    pub status: Option<Overall>,
}

/// Why a run may not go ahead at a stage. Messages name what is missing and how to proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageRefused {
    /// `--stage` on a plan without `stages:`.
    #[error(
        "plan {plan} declares no stages: add `stages: [staging, production]` to it, or leave --stage out"
    )]
    NoStages {
        /// The plan.
        plan: String,
    },
    /// A stage the plan does not list.
    #[error("stage `{stage}` is not one of plan {plan}'s stages: {}", stages.join(", "))]
    UnknownStage {
        /// The plan.
        plan: String,
        /// What was asked.
        stage: String,
        /// What the plan lists.
        stages: Vec<String>,
    },
    /// A stage without a migration to tie the stages together.
    #[error("--stage needs --migration: stages are passed in order for one migration")]
    NoMigration,
    /// An earlier stage has no passing run.
    #[error(
        "plan {plan} at stage {stage} needs a passing run at stage {missing} for migration {migration} first{}; run it there (`--migration {migration} --stage {missing}`), or pass --force (recorded in the report)",
        seen_note(.seen)
    )]
    EarlierStageMissing {
        /// The plan.
        plan: String,
        /// The stage asked for.
        stage: String,
        /// The earlier stage without a passing run.
        missing: String,
        /// The migration.
        migration: String,
        /// Runs at that stage that did not pass, with their verdicts.
        seen: Vec<String>,
    },
}

fn seen_note(seen: &[String]) -> String {
    if seen.is_empty() {
        " (none ran)".to_owned()
    } else {
        format!(" (runs there: {})", seen.join(", "))
    }
}

/// Whether a run of `plan` for `migration` may go ahead at `stage`, given the plan's earlier
/// runs for that migration.
pub fn check_stage(
    plan: &Plan,
    migration: Option<&str>,
    stage: &str,
    earlier: &[StageRun],
) -> Result<(), StageRefused> {
    if plan.stages.is_empty() {
        return Err(StageRefused::NoStages {
            plan: plan.name.clone(),
        });
    }
    let Some(position) = plan.stages.iter().position(|s| s == stage) else {
        return Err(StageRefused::UnknownStage {
            plan: plan.name.clone(),
            stage: stage.to_owned(),
            stages: plan.stages.clone(),
        });
    };
    let Some(migration) = migration else {
        return Err(StageRefused::NoMigration);
    };
    for before in &plan.stages[..position] {
        let at_stage: Vec<&StageRun> = earlier.iter().filter(|r| &r.stage == before).collect();
        let passed = at_stage
            .iter()
            .any(|r| matches!(r.status, Some(Overall::Pass | Overall::Warn)));
        if !passed {
            return Err(StageRefused::EarlierStageMissing {
                plan: plan.name.clone(),
                stage: stage.to_owned(),
                missing: before.clone(),
                migration: migration.to_owned(),
                seen: at_stage
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {}",
                            r.run_id,
                            r.status.map_or("still running", |s| s.as_str())
                        )
                    })
                    .collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{Expander, parse_plan};

    fn plan(stages: &str) -> Plan {
        let env: HashMap<String, String> = HashMap::new();
        parse_plan(
            &format!("name: p\nchecks:\n  - name: up\n    http: {{url: \"http://x/\"}}\n{stages}"),
            "p.yaml",
            Expander::plan(&env),
        )
        .unwrap()
    }

    fn run(stage: &str, id: &str, status: Option<Overall>) -> StageRun {
        StageRun {
            stage: stage.into(),
            run_id: id.into(),
            status,
        }
    }

    #[test]
    fn a_stage_needs_every_earlier_stage_passed_for_the_migration() {
        let plan = plan("stages: [dev, staging, production]\n");
        assert_eq!(plan.stages, ["dev", "staging", "production"]);
        assert_eq!(check_stage(&plan, Some("m-1"), "dev", &[]), Ok(()));
        let refused = check_stage(&plan, Some("m-1"), "production", &[]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "plan p at stage production needs a passing run at stage dev for migration m-1 first (none ran); run it there (`--migration m-1 --stage dev`), or pass --force (recorded in the report)"
        );
        let history = vec![
            run("dev", "r1", Some(Overall::Warn)),
            run("staging", "r2", Some(Overall::Fail)),
            run("staging", "r3", None),
        ];
        let refused = check_stage(&plan, Some("m-1"), "production", &history).unwrap_err();
        assert!(
            refused.to_string().contains(
                "stage staging for migration m-1 first (runs there: r2 FAIL, r3 still running)"
            ),
            "{refused}"
        );
        let mut passed = history;
        passed.push(run("staging", "r4", Some(Overall::Pass)));
        assert_eq!(
            check_stage(&plan, Some("m-1"), "production", &passed),
            Ok(())
        );
    }

    #[test]
    fn stages_must_exist_and_need_a_migration() {
        let plan = plan("stages: [staging, production]\n");
        assert!(matches!(
            check_stage(&plan, Some("m"), "prod", &[]),
            Err(StageRefused::UnknownStage { .. })
        ));
        assert_eq!(
            check_stage(&plan, None, "staging", &[]),
            Err(StageRefused::NoMigration)
        );
        let none = super::tests::plan("");
        assert!(matches!(
            check_stage(&none, Some("m"), "staging", &[]),
            Err(StageRefused::NoStages { .. })
        ));
    }
}
