//! The coordinator's Prometheus metrics. Names follow Prometheus conventions (`_total` for
//! counters, base units in the name); labels are bounded: regions and check names come from
//! operators' plans and probes, and beyond [`MAX_LABEL_VALUES`] distinct values new ones are
//! counted under `_other`, so a runaway plan generator cannot exhaust the coordinator's memory.
//! Regions an operator vouches for (named in a plan or a run's options, or bound to a probe's
//! credential) have slots of their own: a probe that invents regions cannot push the real ones
//! into `_other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Distinct values kept per label (regions, check names) before `_other`.
pub const MAX_LABEL_VALUES: usize = 500;

/// `region`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    /// The probe's region.
    pub region: String,
}

/// `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// A run's status, or a check's.
    pub status: String,
}

/// `migration`, `stage`, `verdict`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationLabels {
    /// The run's migration label.
    pub migration: String,
    /// Its stage, or `none`.
    pub stage: String,
    /// PASS, WARN, FAIL or INCONCLUSIVE.
    pub verdict: String,
}

/// `check`, `region`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// The check's name in its plan.
    pub check: String,
    /// Where it ran.
    pub region: String,
    /// pass, warn or fail.
    pub status: String,
}

/// `method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The gRPC method (`ValidationService/GetReport`).
    pub method: String,
}

/// `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// succeeded, failed, dry_run or skipped.
    pub outcome: String,
}

/// `decision`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// rollback or no_rollback.
    pub decision: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 0.5 ms … 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the coordinator exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `postflight_probes_connected{region}`, set at each scrape from the live probes.
    pub probes_connected: Family<RegionLabels, Gauge>,
    /// `postflight_probe_connections_total{region}`: probe streams opened (a probe that
    /// reconnects counts again; the rate of this is the reconnect rate).
    pub probe_connections: Family<RegionLabels, Counter>,
    /// `postflight_runs_active`, set at each scrape.
    pub runs_active: Gauge,
    /// `postflight_runs_total{status}`: runs that ended, by their final status.
    pub runs_finished: Family<StatusLabels, Counter>,
    /// `postflight_runs_submitted_total`.
    pub runs_submitted: Counter,
    /// `postflight_check_results_total{check,region,status}`.
    pub check_results: Family<CheckLabels, Counter>,
    /// `postflight_check_duration_seconds{region}`: how long checks took on the probes.
    pub check_duration: HistogramFamily<RegionLabels>,
    /// `postflight_results_ingested_total`: results stored (replays not counted again).
    pub results_ingested: Counter,
    /// `postflight_ingest_errors_total`: result batches that could not be stored.
    pub ingest_errors: Counter,
    /// `postflight_results_surplus_total`: results dropped because their check already had
    /// one from the same assignment (a probe sends one per check).
    pub results_surplus: Counter,
    /// `postflight_grpc_request_duration_seconds{method}`: time to answer (for streams, to
    /// open the response).
    pub grpc_duration: HistogramFamily<MethodLabels>,
    /// `postflight_rollback_decisions_total{decision}`.
    pub rollback_decisions: Family<DecisionLabels, Counter>,
    /// `postflight_rollback_actions_total{outcome}`.
    pub rollback_actions: Family<OutcomeLabels, Counter>,
    /// `postflight_migration_runs_total{migration,stage,verdict}`: runs with a migration label
    /// that ended.
    pub migration_runs: Family<MigrationLabels, Counter>,
    seen_checks: Mutex<HashSet<String>>,
    seen_migrations: Mutex<HashSet<String>>,
    seen_regions: Mutex<HashSet<String>>,
    named_regions: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            probes_connected: Family::default(),
            probe_connections: Family::default(),
            runs_active: Gauge::default(),
            runs_finished: Family::default(),
            runs_submitted: Counter::default(),
            check_results: Family::default(),
            check_duration: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            results_ingested: Counter::default(),
            ingest_errors: Counter::default(),
            results_surplus: Counter::default(),
            grpc_duration: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            rollback_decisions: Family::default(),
            rollback_actions: Family::default(),
            migration_runs: Family::default(),
            seen_checks: Mutex::new(HashSet::new()),
            seen_migrations: Mutex::new(HashSet::new()),
            seen_regions: Mutex::new(HashSet::new()),
            named_regions: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        registry.register(
            "postflight_probes_connected",
            "Probes connected now, by region",
            m.probes_connected.clone(),
        );
        registry.register(
            "postflight_probe_connections",
            "Probe streams opened (first connections and reconnects), by region",
            m.probe_connections.clone(),
        );
        registry.register(
            "postflight_runs_active",
            "Runs pending or running",
            m.runs_active.clone(),
        );
        registry.register(
            "postflight_runs",
            "Runs ended, by final status (completed, cancelled, timed_out)",
            m.runs_finished.clone(),
        );
        registry.register(
            "postflight_migration_runs",
            "Runs with a migration label that ended, by migration, stage and verdict",
            m.migration_runs.clone(),
        );
        registry.register(
            "postflight_runs_submitted",
            "Runs submitted",
            m.runs_submitted.clone(),
        );
        registry.register(
            "postflight_check_results",
            "Check results received from probes, by check, region and status",
            m.check_results.clone(),
        );
        registry.register_with_unit(
            "postflight_check_duration",
            "Duration of checks on the probes, by region",
            Unit::Seconds,
            m.check_duration.clone(),
        );
        registry.register(
            "postflight_results_ingested",
            "Check results stored",
            m.results_ingested.clone(),
        );
        registry.register(
            "postflight_ingest_errors",
            "Result batches that could not be stored (the probe replays them)",
            m.ingest_errors.clone(),
        );
        registry.register(
            "postflight_results_surplus",
            "Results dropped because their check already had one from the same assignment",
            m.results_surplus.clone(),
        );
        registry.register_with_unit(
            "postflight_grpc_request_duration",
            "Time to answer gRPC requests, by method",
            Unit::Seconds,
            m.grpc_duration.clone(),
        );
        registry.register(
            "postflight_rollback_decisions",
            "Rollback decisions, by decision (rollback, no_rollback)",
            m.rollback_decisions.clone(),
        );
        registry.register(
            "postflight_rollback_actions",
            "Rollback actions, by outcome (succeeded, failed, dry_run, skipped)",
            m.rollback_actions.clone(),
        );
        Self { registry, ..m }
    }

    /// The text exposition format (`/metrics`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// `value` as a label value, or `_other` once [`MAX_LABEL_VALUES`] others are known.
    fn bounded(seen: &Mutex<HashSet<String>>, value: &str) -> String {
        let mut seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() >= MAX_LABEL_VALUES {
            return "_other".to_owned();
        }
        seen.insert(value.to_owned());
        value.to_owned()
    }

    /// A region label value, bounded.
    pub fn region(&self, region: &str) -> String {
        let named = self
            .named_regions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(region);
        if named {
            return region.to_owned();
        }
        Self::bounded(&self.seen_regions, region)
    }

    /// Gives regions an operator vouches for a label of their own (up to [`MAX_LABEL_VALUES`]
    /// of them), whatever unauthenticated probes claimed before.
    pub fn name_regions<'a>(&self, regions: impl IntoIterator<Item = &'a str>) {
        for region in regions {
            Self::bounded(&self.named_regions, region);
        }
    }

    /// Counts `n` results of `check` in `region` with `status`.
    /// Counts a run of `migration` (at `stage`) that ended with `verdict`.
    pub fn count_migration_run(&self, migration: &str, stage: Option<&str>, verdict: &str) {
        let labels = MigrationLabels {
            migration: Self::bounded(&self.seen_migrations, migration),
            stage: stage.unwrap_or("none").to_owned(),
            verdict: verdict.to_owned(),
        };
        self.migration_runs.get_or_create(&labels).inc();
    }

    /// Counts `n` results of `check` in `region` with `status`.
    pub fn count_check_results(&self, check: &str, region: &str, status: &str, n: u64) {
        let labels = CheckLabels {
            check: Self::bounded(&self.seen_checks, check),
            region: self.region(region),
            status: status.to_owned(),
        };
        self.check_results.get_or_create(&labels).inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.count_check_results("agent-responds", "us-east", "pass", 3);
        m.results_ingested.inc_by(3);
        m.grpc_duration
            .get_or_create(&MethodLabels {
                method: "ValidationService/GetReport".into(),
            })
            .observe(0.002);
        let text = m.encode();
        assert!(
            text.contains(
                "postflight_check_results_total{check=\"agent-responds\",region=\"us-east\",status=\"pass\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("postflight_results_ingested_total 3"),
            "{text}"
        );
        assert!(
            text.contains("postflight_grpc_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE postflight_runs_active gauge"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_LABEL_VALUES + 10 {
            m.count_check_results(&format!("check-{i}"), "r", "pass", 1);
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("postflight_check_results_total{"))
            .count();
        assert_eq!(series, MAX_LABEL_VALUES + 1);
        assert!(
            text.contains(
                "postflight_check_results_total{check=\"_other\",region=\"r\",status=\"pass\"} 10"
            ),
            "{text}"
        );
    }

    #[test]
    fn invented_regions_cannot_push_named_ones_into_other() {
        let m = Metrics::new();
        for i in 0..MAX_LABEL_VALUES + 10 {
            assert_eq!(
                m.region(&format!("junk-{i}")).starts_with("junk-"),
                i < MAX_LABEL_VALUES
            );
        }
        assert_eq!(m.region("eu-west"), "_other", "an unnamed latecomer");
        m.name_regions(["eu-west", "us-east"]);
        assert_eq!(m.region("eu-west"), "eu-west");
        assert_eq!(m.region("us-east"), "us-east");
        assert_eq!(m.region("ap-south"), "_other");
    }
}
