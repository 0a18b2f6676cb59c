//! Fuzz targets: every parser that takes input from outside the process, driven with
//! arbitrary bytes. A target returns normally whatever it is given; a panic, an abort or a
//! hang is a bug. [`TARGETS`] names them for the runner (`src/bin/fuzz.rs`), and
//! [`seeds`] gives each a starting corpus of valid inputs to mutate.

use std::collections::HashMap;
use std::path::Path;

use postflight_plan::sketch::LatencySketch;
use postflight_plan::vars::Expander;
use postflight_proto::v1;
use prost::Message;

/// A fuzz target: consumes one input.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("plan", plan),
    ("expand", expand),
    ("sketch", sketch),
    ("probe_message", probe_message),
];

/// Plan loading, in the coordinator's stage (plain variables, probe references kept) and in
/// the probe's (probe variables expanded), the way each receives a plan.
pub fn plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> =
        HashMap::from([("AGENT_URL".to_owned(), "http://127.0.0.1:1".to_owned())]);
    if let Ok(plan) = postflight_plan::parse_plan(text, "fuzz.yaml", Expander::plan(&vars)) {
        // What the coordinator forwards to probes must load there too, or be refused.
        let canonical = postflight_plan::canonical::canonical_yaml(&plan);
        let _ = postflight_plan::parse_plan(&canonical, "assignment", Expander::probe(&vars));
    }
    let _ = postflight_plan::parse_plan(text, "fuzz.yaml", Expander::both(&vars, &vars));
}

/// `${…}` expansion of one string in both scopes.
pub fn expand(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> = HashMap::from([
        ("A".to_owned(), "x".repeat(64)),
        ("EMPTY".to_owned(), String::new()),
    ]);
    let _ = Expander::plan(&vars).expand(text);
    let _ = Expander::probe(&vars).expand(text);
    let _ = Expander::none().expand(text);
}

/// Latency sketch decoding, and everything done with a decoded sketch.
pub fn sketch(data: &[u8]) {
    let Ok(decoded) = LatencySketch::from_bytes(data) else {
        return;
    };
    let summary = decoded.summary();
    if let Some(s) = summary {
        assert!(s.max.is_finite() && s.p50 >= 0.0, "{s:?}");
    }
    for p in [0.1, 50.0, 99.0, 100.0] {
        let _ = decoded.percentile(p);
    }
    let mut merged = LatencySketch::new();
    merged.add(12.5);
    merged.merge(&decoded);
    let _ = merged.summary();
    // What we encode, we read back.
    let again = LatencySketch::from_bytes(&decoded.to_bytes());
    assert!(
        again.is_ok(),
        "a decoded sketch does not read back: {again:?}"
    );
}

/// A probe's message as the coordinator receives it: protobuf decoding, then every check
/// the coordinator applies before storing or using a result.
pub fn probe_message(data: &[u8]) {
    let Ok(message) = v1::ProbeMessage::decode(data) else {
        return;
    };
    match message.kind {
        Some(v1::probe_message::Kind::Hello(hello)) => {
            let _ = postflight_proto::check_hello(&hello);
        }
        Some(v1::probe_message::Kind::Results(batch)) => {
            for result in batch.results {
                if let Ok(taken) = postflight_proto::probe_result(result) {
                    let _ = taken.result.requests.fits_within(100);
                    let _ = taken.result.sketch.summary();
                    // The coordinator stores the sketch in its own encoding: it reads back.
                    let stored = LatencySketch::from_bytes(&taken.result.sketch.to_bytes());
                    assert!(
                        stored.is_ok(),
                        "an accepted result's sketch does not read back: {stored:?}"
                    );
                }
            }
        }
        Some(v1::probe_message::Kind::Finished(finished)) => {
            let _ = postflight_proto::check_finished(&finished);
        }
        Some(v1::probe_message::Kind::Rejected(rejected)) => {
            let _ = postflight_proto::check_rejected(&rejected);
        }
        Some(v1::probe_message::Kind::Heartbeat(_)) | None => {}
    }
}

/// Valid inputs to start from: the example plans, real sketches, real probe messages.
pub fn seeds(target: &str, examples: &Path) -> Vec<Vec<u8>> {
    match target {
        "plan" => {
            let mut plans: Vec<Vec<u8>> = std::fs::read_dir(examples)
                .map(|dir| {
                    dir.filter_map(|e| e.ok())
                        .filter_map(|e| std::fs::read(e.path()).ok())
                        .collect()
                })
                .unwrap_or_default();
            plans.push(b"name: p\nchecks:\n  - name: c\n    http: {url: \"${AGENT_URL:-http://x}/a\", expect: {json: [{path: $.a, equals: 1}], body_regex: \"a+\"}}\n".to_vec());
            // Golden sets inline (as the canonical plan carries them) and a flow's references.
            plans.push(b"name: p\nchecks:\n  - name: g\n    cases: [{input: hi, id: a, expect: {status: 200}}, {input: {n: 1}}]\n    min_pass_rate: 50%\n    http: {method: POST, url: \"http://x/${case:id}\", json: {m: \"${case:input}\"}}\n  - name: f\n    steps:\n      - {name: a, http: {url: http://x}, capture: {s: $.s}}\n      - {name: b, always: true, database: {url: \"sqlite:x.db\", queries: [{sql: \"SELECT $1\", params: [\"${step:s}\"]}]}}\n".to_vec());
            plans
        }
        "expand" => vec![
            b"${A}/${probe:B:-${EMPTY:-d}}$${lit}".to_vec(),
            b"${A-x} ${probe:X} $ {".to_vec(),
            b"${step:session} ${case:input} ${step:} ${case:a-b}".to_vec(),
        ],
        "sketch" => [
            vec![1.0],
            vec![0.0, 3.5, 3.5, 1200.0],
            (1..300).map(f64::from).collect(),
        ]
        .iter()
        .map(|values: &Vec<f64>| {
            let mut s = LatencySketch::new();
            for v in values {
                s.add(*v);
            }
            s.to_bytes()
        })
        .collect(),
        "probe_message" => {
            let mut sketch = LatencySketch::new();
            sketch.add(2.0);
            let result = v1::CheckResult {
                result_id: "r1".to_owned(),
                status: v1::CheckStatus::Fail.into(),
                message: "refused".to_owned(),
                duration_ms: 3.0,
                requests: 1,
                request_errors: 1,
                latency_ms: Some(v1::LatencySummary {
                    count: 1,
                    p50: 2.0,
                    p95: 2.0,
                    p99: 2.0,
                    max: 2.0,
                }),
                latency_sketch: sketch.to_bytes(),
                ..Default::default()
            };
            let hello = v1::Hello {
                name: "eu-1".to_owned(),
                region: "eu".to_owned(),
                active_assignments: vec!["a".to_owned()],
                ..Default::default()
            };
            [
                v1::probe_message::Kind::Results(v1::ResultBatch {
                    results: vec![result],
                }),
                v1::probe_message::Kind::Hello(hello),
            ]
            .into_iter()
            .map(|kind| v1::ProbeMessage { kind: Some(kind) }.encode_to_vec())
            .collect()
        }
        _ => Vec::new(),
    }
}

/// One random change to `input`: flip, insert, delete, duplicate, splice in a token that
/// parsers care about, or cross over with `other`.
pub fn mutate(input: &mut Vec<u8>, other: &[u8], rng: &mut fastrand::Rng) {
    const TOKENS: &[&[u8]] = &[
        b"${",
        b"${probe:",
        b":-",
        b"}",
        b"[",
        b"]",
        b"{",
        b"&a ",
        b"*a",
        b"\n  - ",
        b": ",
        b"$.",
        b"(",
        b"?",
        b"\"",
        b"\xff",
        b"\x00",
        b"\x80\x80\x80\x80",
    ];
    match rng.u8(0..6) {
        0 if !input.is_empty() => {
            let at = rng.usize(0..input.len());
            input[at] ^= 1 << rng.u8(0..8);
        }
        1 => {
            let at = rng.usize(0..=input.len());
            let token = TOKENS[rng.usize(0..TOKENS.len())];
            input.splice(at..at, token.iter().copied());
        }
        2 if !input.is_empty() => {
            let at = rng.usize(0..input.len());
            let len = rng.usize(0..=(input.len() - at).min(16));
            input.drain(at..at + len);
        }
        3 if !input.is_empty() => {
            let at = rng.usize(0..input.len());
            let len = rng.usize(1..=(input.len() - at).min(64));
            let chunk: Vec<u8> = input[at..at + len].to_vec();
            let times = rng.usize(1..8);
            for _ in 0..times {
                input.splice(at..at, chunk.iter().copied());
            }
        }
        4 if !other.is_empty() => {
            let cut = rng.usize(0..=input.len());
            let from = rng.usize(0..other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ => {
            let at = rng.usize(0..=input.len());
            input.insert(at, rng.u8(..));
        }
    }
}
