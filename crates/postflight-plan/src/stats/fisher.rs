//! The one-sided Fisher exact test on error counts: did requests fail more often after a
//! change than before? Exact for any counts, so it stays right for the small numbers a
//! verification run produces, where a chi-square approximation does not.

use statrs::distribution::{DiscreteCDF, Hypergeometric};

/// P(at least `errors_after` failures among the later requests) if both periods had one error
/// rate, given all the failures seen: SciPy's `fisher_exact([[errors_after, ok_after],
/// [errors_before, ok_before]], alternative="greater")`. 1 when there are no requests.
pub fn fisher_greater(errors_after: u64, after: u64, errors_before: u64, before: u64) -> f64 {
    let errors_after = errors_after.min(after);
    let errors_before = errors_before.min(before);
    let population = after + before;
    let failures = errors_after + errors_before;
    if errors_after == 0 || population == 0 {
        return 1.0;
    }
    match Hypergeometric::new(population, failures, after) {
        // P(X ≥ a) = P(X > a − 1)
        Ok(h) => h.sf(errors_after - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

#[cfg(test)]
// Reference values are written as SciPy printed them.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    /// p-values from SciPy 1.17.1, `fisher_exact(table, alternative="greater")`.
    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected,
            "{actual} vs {expected}"
        );
    }

    #[test]
    fn published_values() {
        close(fisher_greater(8, 10, 1, 6), 0.024475524475524483);
        close(fisher_greater(3, 100, 1, 100), 0.31060122949774249);
        close(fisher_greater(30, 1000, 12, 1000), 0.0036439767535842976);
        close(fisher_greater(1, 1, 0, 1), 0.5);
        assert_eq!(fisher_greater(0, 50, 0, 50), 1.0);
        assert_eq!(fisher_greater(0, 0, 0, 0), 1.0);
    }

    #[test]
    fn more_failures_afterwards_is_stronger_evidence() {
        let mut previous = 1.0;
        for errors in 1..=20 {
            let p = fisher_greater(errors, 100, 2, 100);
            assert!(p < previous, "{errors}: {p}");
            previous = p;
        }
        // Fewer failures afterwards than before is no evidence of more.
        assert!(fisher_greater(1, 100, 10, 100) > 0.99);
    }
}
