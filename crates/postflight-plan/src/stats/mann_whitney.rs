//! The one-sided Mann-Whitney U test: are the latencies after a change larger than before?
//!
//! It compares ranks, not means, so a few slow outliers cannot decide it alone, and it assumes
//! no distribution. Like SciPy's `mannwhitneyu(after, before, alternative="greater")` with its
//! automatic method: the exact distribution of U when one sample has at most
//! [`EXACT_MAX_SMALLER`] values and there are no ties, else the normal approximation with the
//! tie correction and a continuity correction of ½.

use statrs::distribution::{ContinuousCDF, Normal};

/// The largest smaller sample for which the exact distribution is used (as SciPy does).
pub const EXACT_MAX_SMALLER: usize = 8;

/// The outcome of a one-sided Mann-Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample (`after`): how many (after, before) pairs have `after` larger,
    /// ties counting ½.
    pub u: f64,
    /// The probability of a U at least this large if both samples came from one distribution.
    pub p_value: f64,
    /// `u / (n_after × n_before)`: the probability that a random later latency exceeds a
    /// random earlier one (0.5: no difference).
    pub effect: f64,
    /// Whether the exact distribution was used.
    pub exact: bool,
}

/// Tests whether `after` tends to be larger than `before`. `None` when either sample is empty
/// or holds a value that is not a number.
pub fn mann_whitney_greater(after: &[f64], before: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (after.len(), before.len());
    if n1 == 0 || n2 == 0 || after.iter().chain(before).any(|v| v.is_nan()) {
        return None;
    }
    // Ranks of the pooled sample, ties sharing their mean rank.
    let mut pooled: Vec<(f64, bool)> = after
        .iter()
        .map(|v| (*v, true))
        .chain(before.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pooled.len();
    let mut rank_sum_after = 0.0;
    let mut tie_term = 0.0; // Σ (t³ − t) over groups of tied values
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        let t = (end - start) as f64;
        let mean_rank = (start + end + 1) as f64 / 2.0; // ranks start + 1 ..= end
        let from_after = pooled[start..end].iter().filter(|(_, a)| *a).count() as f64;
        rank_sum_after += mean_rank * from_after;
        tie_term += t * t * t - t;
        start = end;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u = rank_sum_after - n1f * (n1f + 1.0) / 2.0;
    let exact = tie_term == 0.0 && n1.min(n2) <= EXACT_MAX_SMALLER;
    let p_value = if exact {
        exact_upper_tail(n1, n2, u)
    } else {
        let nf = n as f64;
        let mean = n1f * n2f / 2.0;
        let variance = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
        if variance <= 0.0 {
            // Every value equal: no evidence either way.
            1.0
        } else {
            let z = (u - mean - 0.5) / variance.sqrt();
            Normal::standard().sf(z)
        }
    };
    Some(MannWhitney {
        u,
        p_value: p_value.clamp(0.0, 1.0),
        effect: u / (n1f * n2f),
        exact,
    })
}

/// P(U ≥ u) under the null hypothesis, from the exact distribution of U: the number of
/// arrangements giving each U are the coefficients of the Gaussian binomial
/// [n1 + n2 choose m]_q with m the smaller size, built as ∏ (1 − q^(k+i)) / (1 − q^i).
fn exact_upper_tail(n1: usize, n2: usize, u: f64) -> f64 {
    let (m, k) = if n1 <= n2 { (n1, n2) } else { (n2, n1) };
    let degree = m * k;
    let mut counts = vec![0.0f64; degree + 1];
    counts[0] = 1.0;
    for i in 1..=m {
        // × (1 − q^(k + i)), from the top so each coefficient is read before it changes.
        let shift = k + i;
        for d in (shift..=degree).rev() {
            counts[d] -= counts[d - shift];
        }
        // ÷ (1 − q^i): a running sum with stride i.
        for d in i..=degree {
            counts[d] += counts[d - i];
        }
    }
    let total: f64 = counts.iter().sum();
    // The distribution is symmetric, so U of either sample has the same tail; `u` is an
    // integer here (no ties).
    let from = u.round().max(0.0) as usize;
    let tail: f64 = counts.iter().skip(from).sum();
    tail / total
}

#[cfg(test)]
// Reference values are written as SciPy printed them.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    /// p-values from SciPy 1.17.1, `mannwhitneyu(after, before, alternative="greater")`
    /// (method "auto", and "exact" where stated), printed with 17 significant digits.
    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.max(1e-12),
            "{actual} vs {expected}"
        );
    }

    #[test]
    fn small_samples_without_ties_use_the_exact_distribution() {
        let after = [3.1, 4.2, 5.0, 6.3, 7.7];
        let before = [1.0, 2.5, 2.9, 3.3, 4.0, 4.4];
        let r = mann_whitney_greater(&after, &before).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 26.0);
        close(r.p_value, 0.025974025974025976);
        close(r.effect, 26.0 / 30.0);
        // One small sample is enough for the exact distribution, however large the other.
        let after = [10.5, 11.2, 12.9, 9.7, 13.3];
        let before: Vec<f64> = (0..40).map(|i| f64::from(i) / 3.0 + 1.0).collect();
        let r = mann_whitney_greater(&after, &before).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 160.0);
        close(r.p_value, 0.014191014758229731);
    }

    #[test]
    fn ties_use_the_normal_approximation_with_the_tie_correction() {
        let after = [2.0, 3.0, 3.0, 4.0, 5.0, 5.0, 6.0];
        let before = [1.0, 2.0, 2.0, 3.0, 3.0, 4.0];
        let r = mann_whitney_greater(&after, &before).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 33.5);
        close(r.p_value, 0.039779403615119578);
    }

    #[test]
    fn large_samples_use_the_normal_approximation() {
        let after: Vec<f64> = (0..60).map(|i| f64::from((i * 37) % 101 + 5)).collect();
        let before: Vec<f64> = (0..70).map(|i| f64::from((i * 53) % 97)).collect();
        let r = mann_whitney_greater(&after, &before).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 2424.5);
        close(r.p_value, 0.065113486170887941);
        // Faster afterwards: no evidence of slower.
        let after = [1.0, 1.5, 2.0, 2.2, 2.4, 3.0, 3.1, 3.3, 3.5];
        let before = [4.0, 4.1, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5];
        let r = mann_whitney_greater(&after, &before).unwrap();
        assert_eq!(r.u, 0.0);
        close(r.p_value, 0.99985291946923038);
    }

    #[test]
    fn all_equal_samples_are_no_evidence() {
        let r = mann_whitney_greater(&[5.0; 10], &[5.0; 10]).unwrap();
        assert_eq!(r.u, 50.0);
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.effect, 0.5);
        assert_eq!(mann_whitney_greater(&[], &[1.0]), None);
        assert_eq!(mann_whitney_greater(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn the_exact_distribution_is_a_distribution() {
        for (n1, n2) in [(1, 1), (3, 4), (8, 8), (8, 2000), (5, 3)] {
            close(exact_upper_tail(n1, n2, 0.0), 1.0);
            let beyond = exact_upper_tail(n1, n2, (n1 * n2 + 1) as f64);
            assert_eq!(beyond, 0.0, "{n1}×{n2}");
            // The largest U happens in exactly one arrangement of C(n1 + n2, n1).
            let top = exact_upper_tail(n1, n2, (n1 * n2) as f64);
            assert!(top > 0.0 && top < 0.6, "{n1}×{n2}: {top}");
        }
        // 3 + 3 values: the largest U (9) in 1 arrangement of 20.
        close(exact_upper_tail(3, 3, 9.0), 0.05);
    }
}
