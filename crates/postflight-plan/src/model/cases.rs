//! Golden sets: `cases:` replays many inputs through one check's request template, each with
//! its own expectations, and passes when enough of them pass (`min_pass_rate`).
//!
//! A plan file names a JSONL file next to it (`cases: golden.jsonl`); the loader reads it and
//! the canonical plan carries the cases inline, so the coordinator and the probes never need
//! the file.

use serde::Serialize;
use serde_json::Value;

use super::HttpExpect;

/// The prefix of a reference to a field of the current case: `${case:input}`.
pub const CASE_PREFIX: &str = "${case:";

/// The most cases one check may replay.
pub const MAX_CASES: usize = 10_000;

/// Default `min_pass_rate`: every case must pass.
pub const DEFAULT_MIN_PASS_RATE: f64 = 1.0;

/// A check's golden set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseSet {
    /// In file order.
    pub cases: Vec<Case>,
    /// The share of cases (0 to 1) that must pass.
    pub min_pass_rate: f64,
}

/// One case: an input for the request template and what its answer must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// How messages name the case: its `id`, or where it was written (`golden.jsonl:3`).
    pub id: String,
    /// The case's fields (`input` at least), for `${case:FIELD}` in the request.
    pub fields: serde_json::Map<String, Value>,
    /// Expectations of this case, on top of the check's own.
    pub expect: HttpExpect,
}

/// As a case is written: its fields, its `id` and its `expect`.
impl Serialize for Case {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &self.fields {
            if key != "id" {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("id", &self.id)?;
        if self.expect != HttpExpect::default() {
            map.serialize_entry("expect", &self.expect)?;
        }
        map.end()
    }
}
