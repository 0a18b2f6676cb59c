use super::*;
use crate::stats::nearest_rank;
use proptest::prelude::*;

#[test]
fn small_samples_are_exact_at_the_extremes() {
    let mut s = LatencySketch::new();
    for v in [10.0, 20.0, 30.0, 40.0, 300.0] {
        s.add(v);
    }
    assert_eq!(s.count(), 5);
    assert_eq!(s.percentile(100.0), Some(300.0));
    let p95 = s.percentile(95.0).unwrap();
    assert!((p95 - 300.0).abs() <= 300.0 * RELATIVE_ACCURACY, "{p95}");
    let p50 = s.percentile(50.0).unwrap();
    assert!((p50 - 30.0).abs() <= 30.0 * RELATIVE_ACCURACY, "{p50}");
    assert_eq!(LatencySketch::new().percentile(50.0), None);
}

#[test]
fn bytes_round_trip() {
    let mut s = LatencySketch::new();
    for v in 1..1000 {
        s.add(v as f64 * 0.37);
    }
    let back = LatencySketch::from_bytes(&s.to_bytes()).unwrap();
    assert_eq!(back.count(), s.count());
    assert_eq!(back.summary(), s.summary());
    assert!(LatencySketch::from_bytes(&[0xff, 0x00, 0x13]).is_err());
    assert_eq!(LatencySketch::from_bytes(&[]).unwrap().count(), 0);
}

#[test]
fn hex_round_trip_in_json() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "hex")]
        sketch: LatencySketch,
    }
    let mut s = LatencySketch::new();
    for v in [1.0, 2.5, 300.0] {
        s.add(v);
    }
    let json = serde_json::to_string(&Holder { sketch: s.clone() }).unwrap();
    let back: Holder = serde_json::from_str(&json).unwrap();
    assert_eq!(back.sketch.summary(), s.summary());
    let empty = serde_json::to_string(&Holder {
        sketch: LatencySketch::new(),
    })
    .unwrap();
    assert_eq!(empty, r#"{"sketch":""}"#);
    for bad in [
        r#"{"sketch":"abc"}"#,
        r#"{"sketch":"zz"}"#,
        r#"{"sketch":"ff00"}"#,
    ] {
        assert!(serde_json::from_str::<Holder>(bad).is_err(), "{bad}");
    }
}

proptest! {
    /// The contract: merged percentiles across regions match the exact percentiles of the
    /// union within 1%.
    #[test]
    fn merged_percentiles_match_the_exact_union_within_one_percent(
        regions in prop::collection::vec(prop::collection::vec(0.05f64..60_000.0, 1..300), 1..5),
        p in prop_oneof![Just(50.0), Just(90.0), Just(95.0), Just(99.0), 1.0f64..100.0],
    ) {
        let mut merged = LatencySketch::new();
        let mut union: Vec<f64> = Vec::new();
        for values in &regions {
            let mut region = LatencySketch::new();
            for v in values {
                region.add(*v);
            }
            let region = LatencySketch::from_bytes(&region.to_bytes()).unwrap();
            merged.merge(&region);
            union.extend(values);
        }
        union.sort_by(f64::total_cmp);
        let exact = nearest_rank(&union, p).unwrap();
        let approx = merged.percentile(p).unwrap();
        prop_assert!((approx - exact).abs() <= exact * 0.01, "p{p}: sketch {approx} vs exact {exact}");
    }
}

fn sketch_of(values: &[f64]) -> LatencySketch {
    let mut s = LatencySketch::new();
    for v in values {
        s.add(*v);
    }
    s
}

/// Replaces the 8-byte little-endian float after the first `flag` byte of `bytes`.
fn with_f64(bytes: &[u8], flag: u8, value: f64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = out.iter().position(|b| *b == flag).unwrap() + 1;
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
    out
}

#[test]
fn forged_sketches_are_refused_with_the_reason() {
    let good = sketch_of(&[1.0, 2.0, 300.0]).to_bytes();
    assert_eq!(good[0], 0xA0, "our encoding starts with the count");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("min above max", with_f64(&good, 0x88, 500.0), "above max"),
        (
            "infinite max",
            with_f64(&good, 0x8C, f64::INFINITY),
            "max inf",
        ),
        ("NaN min", with_f64(&good, 0x88, f64::NAN), "min NaN"),
        ("negative min", with_f64(&good, 0x88, -1.0), "min -1"),
        ("huge max", with_f64(&good, 0x8C, 1e300), "not a latency"),
        ("infinite sum", with_f64(&good, 0x84, f64::INFINITY), "sum"),
        (
            "other accuracy",
            with_f64(&good, 0x02, 1.02),
            "another accuracy",
        ),
        (
            "count disagrees",
            [&[0xA0, 0x02][..], &good[2..]].concat(),
            "says",
        ),
        ("flag twice", [&good[..], &good[..]].concat(), "twice"),
        (
            "negative store",
            [&good[..], &[0x07, 0x00][..]].concat(),
            "0x07",
        ),
        ("truncated", good[..good.len() - 1].to_vec(), "ends early"),
        ("unknown flag", vec![0xA0, 0x02, 0xFF], "0xff"),
    ];
    for (what, bytes, reason) in cases {
        let err = LatencySketch::from_bytes(&bytes).expect_err(what);
        assert!(err.contains(reason), "{what}: {err}");
    }
    assert_eq!(LatencySketch::from_bytes(&good).unwrap().count(), 3);
}

#[test]
fn bins_are_bounded() {
    // Header of a well-formed sketch, then a store with the given bins.
    let store = |bins: &[(i64, u64)]| {
        let mut out = vec![0x05];
        let mut n = bins.len() as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        let mut prev = 0i64;
        for (key, count) in bins {
            let z = ((key - prev) << 1) ^ ((key - prev) >> 63);
            let mut z = z as u64;
            while z >= 0x80 {
                out.push((z as u8) | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
            prev = *key;
            // A count as the variable-length double the encoder writes.
            let mut s = LatencySketch::new();
            for _ in 0..*count {
                s.add(1.0);
            }
            let encoded = s.0.to_java_bytes();
            let count_bytes = &encoded[1..encoded.iter().position(|b| *b == 0x88).unwrap()];
            out.extend_from_slice(count_bytes);
        }
        out
    };
    let err = LatencySketch::from_bytes(&store(&[(5, 1), (5, 1)])).unwrap_err();
    assert!(err.contains("do not increase"), "{err}");
    let err = LatencySketch::from_bytes(&store(&[(1 << 20, 1)])).unwrap_err();
    assert!(err.contains("out of range"), "{err}");
    let many: Vec<(i64, u64)> = (0..2049).map(|k| (k, 1)).collect();
    let err = LatencySketch::from_bytes(&store(&many)).unwrap_err();
    assert!(err.contains("at most 2048"), "{err}");
    let err = LatencySketch::from_bytes(&store(&[(3, 2)])).unwrap_err();
    assert!(err.contains("no count"), "{err}");
}

#[test]
fn an_empty_sketch_is_no_bytes() {
    assert!(LatencySketch::new().to_bytes().is_empty());
    // The library's own encoding of an empty sketch starts with what its decoder takes for
    // a version byte and misreads the rest: it is refused, never read as values.
    let library = LatencySketch::new().0.to_java_bytes();
    assert!(LatencySketch::from_bytes(&library).is_err());
    assert_eq!(LatencySketch::from_bytes(&[]).unwrap().count(), 0);
}

#[test]
fn out_of_range_values_are_held_in_range() {
    let s = sketch_of(&[f64::NAN, -5.0, f64::INFINITY, 1e300]);
    assert_eq!(s.count(), 4);
    assert_eq!(s.percentile(100.0), Some(MAX_LATENCY_MS));
    assert!(s.percentile(1.0).unwrap() >= 0.0);
    assert!(LatencySketch::from_bytes(&s.to_bytes()).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic: they decode to a sketch whose summary is finite, or are
    /// refused.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(s) = LatencySketch::from_bytes(&bytes)
            && let Some(summary) = s.summary()
        {
            prop_assert!(summary.max.is_finite() && summary.p50 <= summary.max + 1e-9);
        }
    }

    /// Mutations of a real encoding (the bytes a fuzzer would reach) never panic either.
    #[test]
    fn mutated_encodings_never_panic(
        values in prop::collection::vec(0.0f64..100_000.0, 1..50),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = sketch_of(&values).to_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(s) = LatencySketch::from_bytes(&bytes) {
            let _ = s.summary();
            let mut merged = sketch_of(&values);
            merged.merge(&s);
            let _ = merged.summary();
        }
    }

    /// Every sketch postflight writes passes its own check.
    #[test]
    fn every_real_sketch_reads_back(values in prop::collection::vec(0.0f64..2e9, 0..300)) {
        let s = sketch_of(&values);
        let back = LatencySketch::from_bytes(&s.to_bytes()).unwrap();
        prop_assert_eq!(back.count(), s.count());
        prop_assert_eq!(back.summary(), s.summary());
    }
}
