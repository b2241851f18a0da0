//! Summary statistics shared by the CLI (`moq watch`) and the benchmarks (`quinn-floor`), so both
//! report latency percentiles by one definition.

/// The nearest-rank percentile of an ascending slice: the smallest value such that at least `p`
/// percent of the values are at most it, i.e. the value of rank `⌈p / 100 · n⌉` (1-based, clamped
/// to `1..=n`). `p` is in percent, `0..=100`: 50 is the median, 99.9 the "three nines". The result
/// is always one of the samples (never interpolated); `p = 0` gives the minimum, `p = 100` the
/// maximum. `None` when `sorted` is empty.
///
/// `sorted` must be sorted ascending (e.g. by `sort_unstable`); this is not checked.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps float noise (0.99 * 1000 = 990.000…01) from bumping the rank.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 100.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn small_samples_round_the_rank_up() {
        // Rank ⌈0.5 · 4⌉ = 2: the lower middle value, not an average of the two.
        assert_eq!(percentile(&[10, 20, 30, 40], 50.0), Some(20));
        // Rank ⌈0.99 · 4⌉ = 4: with few samples the high percentiles are the maximum.
        assert_eq!(percentile(&[10, 20, 30, 40], 99.0), Some(40));
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.9), Some(7));
    }
}
