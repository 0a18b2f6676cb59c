//! Mergeable latency sketches: how percentiles are combined across regions and checks.
//!
//! Averaging per-region percentiles is wrong (the p99 of two regions is not the mean of their
//! p99s); a DDSketch per region, merged, answers any percentile of the union within a fixed
//! relative error. One configuration is used everywhere so that every sketch merges with every
//! other: 0.5% relative accuracy (the contract allows 1%).

use sketches_ddsketch::{Config, DDSketch};

use crate::report::LatencySummary;

mod encoding;

/// The largest latency a sketch holds, in milliseconds (about 11.6 days): longer is not a
/// latency but a broken clock or a forged message, and every figure derived from a sketch
/// stays a valid `Duration`.
pub const MAX_LATENCY_MS: f64 = 1e9;

/// `ms` brought into `[0, MAX_LATENCY_MS]`, NaN as 0: a sketch only ever holds values in
/// range, and any figure derived from one converts to a `Duration` without panicking.
pub fn latency_in_range(ms: f64) -> f64 {
    if ms.is_nan() {
        0.0
    } else {
        ms.clamp(0.0, MAX_LATENCY_MS)
    }
}

/// Relative accuracy of every sketch.
pub const RELATIVE_ACCURACY: f64 = 0.005;
/// Bin limit and smallest value must be the library's defaults: its binary decoder rebuilds
/// the configuration from the accuracy alone with these, and sketches only merge when their
/// configurations are equal. 2048 bins at 0.5% cover a 1:10⁸ range (10 µs to 17 minutes)
/// before the lowest bins collapse.
const MAX_BINS: u32 = 2048;
const MIN_VALUE: f64 = 1.0e-9;

/// A latency sketch, in milliseconds.
#[derive(Clone)]
pub struct LatencySketch(DDSketch);

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySketch")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencySketch {
    /// An empty sketch with the shared configuration.
    pub fn new() -> Self {
        Self(DDSketch::new(Config::new(
            RELATIVE_ACCURACY,
            MAX_BINS,
            MIN_VALUE,
        )))
    }

    /// Adds one latency in milliseconds.
    pub fn add(&mut self, ms: f64) {
        self.0.add(latency_in_range(ms));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencySketch) {
        // Both sketches share one configuration, which is the only way merge can fail.
        let _ = self.0.merge(&other.0);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The nearest-rank percentile (`p` in (0, 100]) within the relative accuracy; `None` when
    /// empty. DDSketch ranks as `⌊q·(n−1)⌋`; the quantile asked for is chosen so that rank is
    /// the nearest rank `⌈p/100·n⌉ − 1` of the plan language.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        if n == 1 || p >= 100.0 {
            return self.0.max();
        }
        let rank = ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n) - 1;
        let q = ((rank as f64 + 0.5) / (n - 1) as f64).min(1.0);
        let value = self.0.quantile(q).ok().flatten()?;
        // The sketch's bucket value can overshoot the exact extremes slightly; bring it back
        // between them (`max` then `min`, which unlike `clamp` cannot panic).
        Some(value.max(self.0.min()?).min(self.0.max()?))
    }

    /// Count, p50, p95, p99 and max (exact max).
    pub fn summary(&self) -> Option<LatencySummary> {
        let round = |x: f64| (x * 1e3).round() / 1e3;
        Some(LatencySummary {
            count: self.count(),
            p50: round(self.percentile(50.0)?),
            p95: round(self.percentile(95.0)?),
            p99: round(self.percentile(99.0)?),
            max: round(self.0.max()?),
        })
    }

    /// Compact binary form (DataDog's DDSketch encoding) for the wire and the database; an
    /// empty sketch is no bytes at all.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.count() == 0 {
            return Vec::new();
        }
        self.0.to_java_bytes()
    }

    /// How many values `bytes` holds if it is a sketch [`LatencySketch::from_bytes`] would
    /// accept, without decoding it (cheap enough for every result at ingest).
    pub fn check_bytes(bytes: &[u8]) -> Result<u64, String> {
        if bytes.is_empty() {
            return Ok(0);
        }
        encoding::check(bytes)
            .map(|shape| shape.count)
            .map_err(|e| format!("invalid latency sketch: {e}"))
    }

    /// Decodes [`LatencySketch::to_bytes`]; empty input is an empty sketch. The bytes come
    /// from probes and the database, so they are checked against the shape our encoder writes
    /// ([`encoding::check`]) before the library decodes them: its decoder trusts its input
    /// (counts that overflow, keys far out of range, `min > max`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Ok(Self::new());
        }
        let shape = encoding::check(bytes).map_err(|e| format!("invalid latency sketch: {e}"))?;
        let decoded = DDSketch::from_java_bytes(bytes)
            .map_err(|e| format!("invalid latency sketch: {e:?}"))?;
        if decoded.count() as u64 != shape.count {
            return Err(format!(
                "invalid latency sketch: it says {} values but its bins hold {}",
                shape.count,
                decoded.count()
            ));
        }
        // A sketch made with another accuracy cannot be merged with ours: refuse it here
        // rather than silently mixing resolutions.
        let mut sketch = Self::new();
        sketch
            .0
            .merge(&decoded)
            .map_err(|e| format!("incompatible latency sketch: {e}"))?;
        Ok(sketch)
    }
}

/// Serde for sketches inside JSON records (a monitor's stored rounds): the binary encoding as
/// a hex string.
pub mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::LatencySketch;

    /// Writes the sketch's bytes as lower-case hex.
    pub fn serialize<S: Serializer>(sketch: &LatencySketch, s: S) -> Result<S::Ok, S::Error> {
        // An empty sketch is no bytes, so an empty string.
        let text: String = sketch
            .to_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        s.serialize_str(&text)
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LatencySketch, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 || !text.is_ascii() {
            return Err(serde::de::Error::custom(
                "a sketch is an even number of hex digits",
            ));
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(serde::de::Error::custom)?;
        LatencySketch::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
