//! A histogram with fixed bucket bounds and one atomic counter per bucket.
//!
//! Recording is a bucket search over a handful of bounds, one `fetch_add` and one compare-and-swap
//! on the sum: no buffer to drain, no allocation, nothing to do at upkeep. A scrape reads the
//! counters and cumulates them. The count is the sum of the buckets, so the `+Inf` bucket and
//! `_count` always agree even while other threads record (the sum may lead them by a sample).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::HistogramFn;

pub(crate) struct AtomicHistogram {
    /// Upper bounds (inclusive, as Prometheus's `le`), ascending, finite.
    bounds: Arc<[f64]>,
    /// One counter per bound plus the overflow (`+Inf`) bucket; not cumulative.
    buckets: Box<[AtomicU64]>,
    /// Sum of the recorded values, as `f64` bits.
    sum: AtomicU64,
}

/// A point-in-time reading: cumulative bucket counts (one per bound, then `+Inf`) and the sum.
pub(crate) struct Reading {
    pub cumulative: Vec<u64>,
    pub sum: f64,
}

impl AtomicHistogram {
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { bounds, buckets, sum: AtomicU64::new(0f64.to_bits()) }
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn read(&self) -> Reading {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        Reading { cumulative, sum: f64::from_bits(self.sum.load(Ordering::Relaxed)) }
    }

    #[inline]
    fn add(&self, value: f64, n: u64) {
        // NaN compares false with every bound and lands in +Inf, like a value above them all.
        let index = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(n, Ordering::Relaxed);
        let add = value * n as f64;
        let _ =
            self.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some((f64::from_bits(s) + add).to_bits()));
    }
}

impl HistogramFn for AtomicHistogram {
    #[inline]
    fn record(&self, value: f64) {
        self.add(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        self.add(value, count as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> AtomicHistogram {
        AtomicHistogram::new(Arc::from(&[0.1, 1.0, 10.0][..]))
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_above() {
        let h = histogram();
        for v in [0.1, 0.05, 1.0, 5.0, 11.0, f64::INFINITY] {
            h.record(v);
        }
        let r = h.read();
        assert_eq!(r.cumulative, vec![2, 3, 4, 6]);
        assert_eq!(h.count(), 6);
        assert!(r.sum.is_infinite());
    }

    #[test]
    fn nan_lands_in_the_overflow_bucket() {
        let h = histogram();
        h.record(f64::NAN);
        assert_eq!(h.read().cumulative, vec![0, 0, 0, 1]);
    }

    #[test]
    fn record_many_counts_each_sample() {
        let h = histogram();
        h.record_many(0.5, 4);
        let r = h.read();
        assert_eq!(r.cumulative, vec![0, 4, 4, 4]);
        assert_eq!(r.sum, 2.0);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = Arc::new(histogram());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        h.record(((i + t) % 20) as f64);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = h.read();
        assert_eq!(*r.cumulative.last().unwrap(), 40_000);
        // Values 0..19, each 2000 times: 0 → le 0.1; 1 → le 1; 2..=10 → le 10; 11..=19 → +Inf.
        assert_eq!(r.cumulative, vec![2_000, 4_000, 22_000, 40_000]);
        assert_eq!(r.sum, 4.0 * 10_000.0 / 20.0 * (0..20).sum::<i32>() as f64);
    }
}
