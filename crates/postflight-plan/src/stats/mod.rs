//! Percentiles as the plan language defines them, the confidence bound that rate triggers
//! act on, and the tests that compare a run with its baseline ([`mann_whitney`] for latencies,
//! [`fisher`] for error counts).

mod fisher;
mod mann_whitney;

pub use fisher::fisher_greater;
pub use mann_whitney::{MannWhitney, mann_whitney_greater};

use statrs::distribution::{ContinuousCDF, Normal};

/// Nearest-rank percentile of sorted values: `sorted[ceil(p/100 × n) − 1]`, `p` in (0, 100].
///
/// Nearest rank always returns an observed value, so a reported p95 is a latency some request
/// really had; `None` for no values.
pub fn nearest_rank<T: Copy>(sorted: &[T], percentile: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as f64;
    let rank = (percentile / 100.0 * n).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Lower bound of the Wilson score interval for `errors` failures among `n` requests, at the
/// two-sided `confidence` (0.95: z = 1.96); `confidence` 0 gives the plain ratio.
///
/// A rate trigger acts on this bound rather than on the ratio: 1 failure of 7 requests is a
/// 14% ratio but weak evidence of a 10% error rate (bound 2.6%), while 7 of 7 is strong (bound
/// 64.6%). Unlike the normal approximation, Wilson's bound stays inside [0, 1] and behaves for
/// the small counts a round of checks produces. `n` = 0 gives 0.
pub fn wilson_lower_bound(errors: u64, n: u64, confidence: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n_f = n as f64;
    let ratio = errors.min(n) as f64 / n_f;
    let z = z_score(confidence);
    if z == 0.0 {
        return ratio;
    }
    let z2 = z * z;
    let centre = ratio + z2 / (2.0 * n_f);
    let spread = z * (ratio * (1.0 - ratio) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    ((centre - spread) / (1.0 + z2 / n_f)).clamp(0.0, ratio)
}

/// The standard normal quantile of a two-sided `confidence` (0.95 → 1.96); 0 for
/// `confidence` ≤ 0. The plan loader keeps `confidence` below 1.
pub fn z_score(confidence: f64) -> f64 {
    if confidence.is_nan() || confidence <= 0.0 {
        return 0.0;
    }
    let tail = (1.0 + confidence.min(0.999_999_999)) / 2.0;
    match Normal::new(0.0, 1.0) {
        Ok(normal) => normal.inverse_cdf(tail),
        Err(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounded(x: f64) -> f64 {
        (x * 1e4).round() / 1e4
    }

    #[test]
    fn wilson_bounds_match_published_values() {
        // Reference values computed independently (Python, the closed form of Wilson 1927 with
        // z = 1.959963984540054), rounded to four places.
        assert_eq!(rounded(wilson_lower_bound(7, 7, 0.95)), 0.6457);
        assert_eq!(rounded(wilson_lower_bound(1, 7, 0.95)), 0.0257);
        assert_eq!(rounded(wilson_lower_bound(4, 30, 0.95)), 0.0531);
        assert_eq!(rounded(wilson_lower_bound(0, 10, 0.95)), 0.0);
        assert_eq!(rounded(wilson_lower_bound(50, 100, 0.95)), 0.4038);
        assert_eq!(rounded(wilson_lower_bound(1, 1, 0.95)), 0.2065);
        // 99%: z = 2.5758293035489.
        assert_eq!(rounded(wilson_lower_bound(7, 7, 0.99)), 0.5134);
    }

    #[test]
    fn wilson_degenerate_inputs() {
        assert_eq!(wilson_lower_bound(0, 0, 0.95), 0.0);
        assert_eq!(
            wilson_lower_bound(3, 30, 0.0),
            0.1,
            "confidence 0 is the ratio"
        );
        assert_eq!(
            wilson_lower_bound(9, 3, 0.95),
            wilson_lower_bound(3, 3, 0.95)
        );
        assert!((z_score(0.95) - 1.959964).abs() < 1e-6);
        assert_eq!(z_score(0.0), 0.0);
        assert_eq!(z_score(f64::NAN), 0.0);
    }

    #[test]
    fn the_bound_grows_with_evidence_and_with_failures() {
        for n in 2..200u64 {
            // The same ratio over more requests is stronger evidence.
            if n % 2 == 0 {
                assert!(wilson_lower_bound(n, 2 * n, 0.95) > wilson_lower_bound(n / 2, n, 0.95));
            }
            // More failures among the same requests, a higher bound; a higher confidence, a
            // lower one.
            for errors in 1..=n {
                let bound = wilson_lower_bound(errors, n, 0.95);
                assert!(
                    bound > wilson_lower_bound(errors - 1, n, 0.95),
                    "{errors}/{n}"
                );
                assert!(bound > wilson_lower_bound(errors, n, 0.99), "{errors}/{n}");
            }
        }
    }

    #[test]
    fn nearest_rank_on_the_contract_examples() {
        let five = [10, 20, 30, 40, 50];
        assert_eq!(nearest_rank(&five, 95.0), Some(50));
        assert_eq!(nearest_rank(&five, 50.0), Some(30));
        assert_eq!(nearest_rank(&five, 20.0), Some(10));
        assert_eq!(nearest_rank(&five, 100.0), Some(50));
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&hundred, 95.0), Some(95));
        assert_eq!(nearest_rank(&hundred, 99.0), Some(99));
        assert_eq!(nearest_rank(&hundred, 0.1), Some(1));
        assert_eq!(nearest_rank::<u32>(&[], 50.0), None);
    }
}
