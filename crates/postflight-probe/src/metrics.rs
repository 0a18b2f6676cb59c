//! The probe's Prometheus metrics (served with `--http-listen`): whether it is connected, how
//! often it had to reconnect, what it executed, and how many results wait for the coordinator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// pass, warn or fail.
    pub status: String,
}

/// Every metric the probe exports.
#[derive(Debug)]
pub struct ProbeMetrics {
    registry: Registry,
    /// `postflight_probe_connected`: 1 while the coordinator has welcomed this probe.
    pub connected: Gauge,
    /// `postflight_probe_connections_total`: streams opened (the first and every reconnect).
    pub connections: Counter,
    /// `postflight_probe_checks_total{status}`: checks executed.
    pub checks: Family<StatusLabels, Counter>,
    /// `postflight_probe_buffered_results`: results not yet acknowledged by the coordinator.
    pub buffered: Gauge,
    /// `postflight_probe_results_acknowledged_total`.
    pub acknowledged: Counter,
    /// `postflight_probe_results_dropped_total`: results lost because the buffer was full.
    pub dropped: Counter,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            connected: Gauge::default(),
            connections: Counter::default(),
            checks: Family::default(),
            buffered: Gauge::default(),
            acknowledged: Counter::default(),
            dropped: Counter::default(),
        };
        registry.register(
            "postflight_probe_connected",
            "1 while connected to the coordinator",
            m.connected.clone(),
        );
        registry.register(
            "postflight_probe_connections",
            "Streams opened to the coordinator (first connection and reconnects)",
            m.connections.clone(),
        );
        registry.register(
            "postflight_probe_checks",
            "Checks executed, by status",
            m.checks.clone(),
        );
        registry.register(
            "postflight_probe_buffered_results",
            "Results not yet acknowledged by the coordinator",
            m.buffered.clone(),
        );
        registry.register(
            "postflight_probe_results_acknowledged",
            "Results the coordinator acknowledged",
            m.acknowledged.clone(),
        );
        registry.register(
            "postflight_probe_results_dropped",
            "Results dropped because the buffer was full",
            m.dropped.clone(),
        );
        Self { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts one executed check.
    pub fn count_check(&self, status: i32) {
        let status = match postflight_proto::v1::CheckStatus::try_from(status) {
            Ok(postflight_proto::v1::CheckStatus::Pass) => "pass",
            Ok(postflight_proto::v1::CheckStatus::Warn) => "warn",
            Ok(postflight_proto::v1::CheckStatus::Fail) => "fail",
            _ => "unspecified",
        };
        self.checks
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_checks_by_status() {
        let m = ProbeMetrics::new();
        m.count_check(postflight_proto::v1::CheckStatus::Fail as i32);
        m.connected.set(1);
        let text = m.encode();
        assert!(
            text.contains("postflight_probe_checks_total{status=\"fail\"} 1"),
            "{text}"
        );
        assert!(text.contains("postflight_probe_connected 1"), "{text}");
    }
}
