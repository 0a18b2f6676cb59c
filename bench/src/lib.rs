//! Shared pieces of the benchmark tools.

use std::time::Duration;

use postflight_plan::sketch::LatencySketch;
use postflight_proto::v1;
use tonic::transport::{Channel, Endpoint};

/// A gRPC channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// The plan the simulated probes execute: `checks` checks alternating between an HTTP check
/// (one request) and a 30-sample latency check, as a monitor's plan would mix them; with
/// `every_probe`, every probe of each region executes it.
pub fn plan_yaml(name: &str, checks: usize, regions: &[String], every_probe: bool) -> String {
    let mut yaml = format!("name: {name}\nchecks:\n");
    for k in 0..checks {
        if k.is_multiple_of(2) {
            yaml.push_str(&format!(
                "  - name: health-{k}\n    http: {{url: \"http://127.0.0.1:9/health\"}}\n"
            ));
        } else {
            yaml.push_str(&format!(
                "  - name: latency-{k}\n    latency: {{request: {{url: \"http://127.0.0.1:9/api\"}}, samples: {LATENCY_SAMPLES}, percentile: 95, pass_below: 3s}}\n"
            ));
        }
    }
    yaml.push_str(&format!(
        "policy: {{regions: [{}], quorum: any{}}}\n",
        regions.join(", "),
        if every_probe {
            ", probes_per_region: all"
        } else {
            ""
        }
    ));
    yaml
}

/// Samples of each latency check of [`plan_yaml`].
pub const LATENCY_SAMPLES: u32 = 30;

/// What a probe sends for the checks of [`plan_yaml`]: real summaries and DDSketches built
/// from sample sets (a skewed spread around a few milliseconds, as a healthy service shows),
/// made once and copied per result.
pub struct ResultTemplates {
    http: v1::CheckResult,
    latency: v1::CheckResult,
}

impl Default for ResultTemplates {
    fn default() -> Self {
        Self::new()
    }
}

impl ResultTemplates {
    /// Builds both templates.
    pub fn new() -> Self {
        let template = |samples: &[f64]| {
            let mut sketch = LatencySketch::new();
            for &ms in samples {
                sketch.add(ms);
            }
            let summary = sketch.summary();
            v1::CheckResult {
                status: v1::CheckStatus::Pass.into(),
                message: format!("{} requests, p95 within bounds", samples.len()),
                duration_ms: samples.iter().sum(),
                requests: samples.len() as u64,
                request_errors: 0,
                latency_ms: summary.map(|s| v1::LatencySummary {
                    count: s.count,
                    p50: s.p50,
                    p95: s.p95,
                    p99: s.p99,
                    max: s.max,
                }),
                latency_sketch: sketch.to_bytes(),
                ..Default::default()
            }
        };
        // A deterministic skewed sample set: most requests near 2 ms, a tail to 40 ms.
        let samples: Vec<f64> = (0..LATENCY_SAMPLES)
            .map(|i| {
                let u = (f64::from(i) + 0.5) / f64::from(LATENCY_SAMPLES);
                2.0 * (-(1.0 - u).ln()).powf(1.6).max(0.05) + 0.4
            })
            .collect();
        Self {
            http: template(&samples[..1]),
            latency: template(&samples),
        }
    }

    /// The result of check `index` for `assignment`, with a distinct id.
    pub fn result(&self, run_id: &str, assignment_id: &str, index: u32) -> v1::CheckResult {
        let template = if index.is_multiple_of(2) {
            &self.http
        } else {
            &self.latency
        };
        v1::CheckResult {
            result_id: format!("{assignment_id}-{index}"),
            run_id: run_id.to_owned(),
            assignment_id: assignment_id.to_owned(),
            check_index: index,
            check_name: String::new(),
            ..template.clone()
        }
    }
}

/// The median of some figures.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
