//! A log-linear histogram in the manner of HdrHistogram, for latencies in microseconds.
//!
//! Values below 128 are counted exactly. Above, each power of two is split into 64 equal
//! buckets, so a value is reported (as the highest value of its bucket, like HdrHistogram's
//! "highest equivalent value") at most 1/64, about 1.6 %, above what was recorded. Recording
//! is an index computation and an increment; the whole `u64` range takes under 4000 buckets.

/// Values below this are their own bucket.
const EXACT: u64 = 128;
/// Buckets per power of two above `EXACT`.
const PER_OCTAVE: u64 = 64;
/// log2(EXACT).
const EXACT_BITS: u32 = 7;

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, value: u64) {
        let index = index_of(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds the counts of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The largest value recorded, exactly.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below or at which `percentile` % of the values lie (0 when empty).
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percentile / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return highest_in(index).min(self.max);
            }
        }
        self.max
    }
}

fn index_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros(); // >= EXACT_BITS
    let shift = octave - (EXACT_BITS - 1);
    let sub = (value >> shift) - PER_OCTAVE; // 0..PER_OCTAVE
    (EXACT + u64::from(octave - EXACT_BITS) * PER_OCTAVE + sub) as usize
}

/// The highest value that falls in bucket `index`.
fn highest_in(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let above = index - EXACT;
    let octave = (above / PER_OCTAVE) as u32 + EXACT_BITS;
    let sub = above % PER_OCTAVE + PER_OCTAVE;
    let shift = octave - (EXACT_BITS - 1);
    ((sub + 1) << shift).wrapping_sub(1).max(sub << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..EXACT {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 63);
        assert_eq!(h.percentile(100.0), 127);
        assert_eq!(h.max(), 127);
    }

    #[test]
    fn large_values_are_within_one_sixty_fourth() {
        let mut value = 1u64;
        while value < u64::MAX / 3 {
            for v in [value, value + 1, value * 3 / 2, value * 2 - 1] {
                let bucket = index_of(v);
                let high = highest_in(bucket);
                assert!(high >= v, "{v}: bucket {bucket} tops at {high}");
                assert!(
                    (high - v) as f64 <= v as f64 / 64.0 + 1.0,
                    "{v}: bucket {bucket} tops at {high}"
                );
                assert!(bucket == 0 || highest_in(bucket - 1) < v, "{v} in {bucket}");
            }
            value = value * 2 + 1;
        }
        assert_eq!(highest_in(index_of(u64::MAX)), u64::MAX);
    }

    #[test]
    fn percentiles_of_one_to_ten_thousand() {
        let mut h = Histogram::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        let near = |p: f64, expected: f64| {
            let got = h.percentile(p) as f64;
            assert!(
                got >= expected && got <= expected * 1.016,
                "p{p}: {got}, expected about {expected}"
            );
        };
        near(50.0, 5_000.0);
        near(95.0, 9_500.0);
        near(99.0, 9_900.0);
        assert_eq!(h.percentile(100.0), 10_000);
        assert_eq!(h.len(), 10_000);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(20);
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.percentile(50.0), 20);
        assert_eq!(Histogram::new().percentile(99.0), 0);
    }
}
