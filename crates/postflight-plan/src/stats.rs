//! Percentiles as the plan language defines them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
