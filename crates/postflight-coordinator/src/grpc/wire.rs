//! The probe protocol's wire messages ↔ the engine's own types. Field checks come first
//! (`postflight-proto`: `check_hello`, `check_finished`, …); these conversions only move
//! fields, so the engine never sees a protobuf type.

use std::time::Duration;

use postflight_proto::v1;

use crate::engine::{AssignmentFinished, AssignmentRejected, ProbeHello, RunOptions, ToProbe};

impl From<v1::Hello> for ProbeHello {
    fn from(h: v1::Hello) -> Self {
        Self {
            name: h.name,
            region: h.region,
            labels: h.labels.into_iter().collect(),
            version: h.version,
            active_assignments: h.active_assignments,
        }
    }
}

impl From<v1::AssignmentFinished> for AssignmentFinished {
    fn from(f: v1::AssignmentFinished) -> Self {
        Self {
            assignment_id: f.assignment_id,
            run_id: f.run_id,
            results: f.results,
        }
    }
}

impl From<v1::AssignmentRejected> for AssignmentRejected {
    fn from(r: v1::AssignmentRejected) -> Self {
        Self {
            assignment_id: r.assignment_id,
            run_id: r.run_id,
            reason: r.reason,
        }
    }
}

impl From<v1::RunOptions> for RunOptions {
    /// A `timeout_ms` of 0 is the coordinator's default.
    fn from(o: v1::RunOptions) -> Self {
        let text = |s: String| (!s.is_empty()).then_some(s);
        Self {
            dry_run: o.dry_run,
            regions: o.regions,
            timeout: (o.timeout_ms > 0).then(|| Duration::from_millis(o.timeout_ms)),
            against: text(o.against),
            take_baseline: o.take_baseline,
            migration: text(o.migration),
            stage: text(o.stage),
            force: o.force,
        }
    }
}

impl From<ToProbe> for v1::CoordinatorMessage {
    fn from(m: ToProbe) -> Self {
        use v1::coordinator_message::Kind;
        let kind = match m {
            ToProbe::Welcome {
                coordinator_version,
                heartbeat_interval_ms,
                drop_assignments,
            } => Kind::Welcome(v1::Welcome {
                coordinator_version,
                heartbeat_interval_ms,
                drop_assignments,
            }),
            ToProbe::Assignment {
                assignment_id,
                run_id,
                plan_yaml,
                deadline_unix_ms,
                keep_latencies,
            } => Kind::Assignment(v1::Assignment {
                assignment_id,
                run_id,
                plan_yaml: plan_yaml.to_string(),
                deadline_unix_ms,
                keep_latencies,
            }),
            ToProbe::Cancel {
                assignment_id,
                reason,
            } => Kind::Cancel(v1::CancelAssignment {
                assignment_id,
                reason,
            }),
            ToProbe::Ack { result_ids } => Kind::Ack(v1::ResultAck { result_ids }),
        };
        Self { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_is_the_default_and_others_are_kept() {
        let default = RunOptions::from(v1::RunOptions::default());
        assert_eq!(default.timeout, None);
        let set = RunOptions::from(v1::RunOptions {
            dry_run: true,
            regions: vec!["eu".into()],
            timeout_ms: 1500,
            ..Default::default()
        });
        assert_eq!(set.timeout, Some(Duration::from_millis(1500)));
        assert!(set.dry_run);
        assert_eq!(set.regions, ["eu"]);
    }

    #[test]
    fn assignments_reach_the_wire_whole() {
        let wire = v1::CoordinatorMessage::from(ToProbe::Assignment {
            assignment_id: "a".into(),
            run_id: "r".into(),
            plan_yaml: "name: p".into(),
            deadline_unix_ms: 9,
            keep_latencies: true,
        });
        assert_eq!(
            wire.kind,
            Some(v1::coordinator_message::Kind::Assignment(v1::Assignment {
                assignment_id: "a".into(),
                run_id: "r".into(),
                plan_yaml: "name: p".into(),
                deadline_unix_ms: 9,
                keep_latencies: true,
            }))
        );
    }
}
