//! Streaming statistics of one tensor across samples.
//!
//! Memory is fixed per tensor (two histograms of [`BINS`] counts, a few
//! scalars, optional per-channel extremes), whatever the number of samples.
//!
//! Histograms are exact and order-free: each side (negative values by
//! magnitude, non-negative values) covers `[0, R)` with `R` a power of two
//! and `BINS` bins, so the bin width is a power of two and `|x| / width` is
//! computed without rounding. When a larger value arrives, `R` doubles and
//! neighbouring bins merge, which gives exactly the counts a histogram built
//! at the larger range from the start would have. Merging per-sample
//! statistics therefore gives the same result in any order and with any
//! number of workers; the only float sums (for averaged MinMax) are added in
//! sample order.

/// Bins per histogram side.
pub const BINS: usize = 2048;

/// One side of the histogram: counts of `|x|` in `[0, 2^exp)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// log2 of the covered range; `None` while empty.
    pub exp: Option<i32>,
    pub counts: Vec<u64>,
}

impl Default for Side {
    fn default() -> Self {
        Side {
            exp: None,
            counts: vec![0; BINS],
        }
    }
}

/// The smallest `e` with `2^e > m` (m ≥ 0, finite).
fn range_exp(m: f32) -> i32 {
    if m <= 0.0 {
        return -126;
    }
    let mut e = m.log2().floor() as i32 + 1;
    while (e as f32).exp2() <= m {
        e += 1;
    }
    while e > -126 && ((e - 1) as f32).exp2() > m {
        e -= 1;
    }
    e.max(-126)
}

impl Side {
    /// Upper end of the covered range.
    pub fn range(&self) -> f32 {
        self.exp.map_or(0.0, |e| (e as f32).exp2())
    }

    pub fn width(&self) -> f32 {
        self.range() / BINS as f32
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Widens the range to `2^exp` by merging bins.
    fn grow_to(&mut self, exp: i32) {
        let Some(cur) = self.exp else {
            self.exp = Some(exp);
            return;
        };
        if exp <= cur {
            return;
        }
        let shift = (exp - cur) as u32;
        if shift > BINS.trailing_zeros() {
            let total = self.total();
            self.counts.iter_mut().for_each(|c| *c = 0);
            self.counts[0] = total;
        } else {
            let f = 1usize << shift;
            let mut merged = vec![0u64; BINS];
            for (i, c) in self.counts.iter().enumerate() {
                merged[i / f] += c;
            }
            self.counts = merged;
        }
        self.exp = Some(exp);
    }

    /// Adds `other`'s counts, at the larger of the two ranges.
    pub fn merge(&mut self, other: &Side) {
        let Some(oe) = other.exp else { return };
        let Some(se) = self.exp else {
            *self = other.clone();
            return;
        };
        if oe > se {
            self.grow_to(oe);
        }
        // Fold `other`'s bins into ours: bin i of the finer grid lies in
        // bin i >> shift of the coarser one.
        let shift = (se.max(oe) - oe) as u32;
        if shift > BINS.trailing_zeros() {
            self.counts[0] += other.total();
        } else {
            for (i, c) in other.counts.iter().enumerate() {
                self.counts[i >> shift] += c;
            }
        }
    }
}

/// Minimum and maximum of finite values, eight lanes at a time (compiles
/// to vector min/max; `f32::min` would not, being NaN-aware).
fn min_max(v: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            lo[k] = if c[k] < lo[k] { c[k] } else { lo[k] };
            hi[k] = if c[k] > hi[k] { c[k] } else { hi[k] };
        }
    }
    for &x in rest {
        lo[0] = if x < lo[0] { x } else { lo[0] };
        hi[0] = if x > hi[0] { x } else { hi[0] };
    }
    let lo = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (lo, hi)
}

/// Bins finite values into the negative-magnitude and non-negative sides in
/// one pass (`neg_max`, `pos_max`: the largest magnitude on each side).
fn add_both(neg: &mut Side, pos: &mut Side, values: &[f32], neg_max: f32, pos_max: f32) {
    if neg_max > 0.0 {
        neg.grow_to(range_exp(neg_max));
    }
    pos.grow_to(range_exp(pos_max));
    let inv = [
        BINS as f32 / pos.range(),
        if neg_max > 0.0 {
            BINS as f32 / neg.range()
        } else {
            0.0
        },
    ];
    // Branch-free: the sign picks the side (no mispredictions on data
    // centred on zero).
    let bin = |x: f32| {
        let side = (x < 0.0) as usize;
        // Exact: the inverses are powers of two; clamped in float first.
        (side, (x.abs() * inv[side]).min((BINS - 1) as f32) as usize)
    };
    const WAYS: usize = 4;
    if values.len() < 2 * WAYS * BINS {
        // Small tensors: count in place (interleaving would cost more to set
        // up than it saves).
        for &x in values {
            let (side, b) = bin(x);
            if side == 0 {
                pos.counts[b] += 1;
            } else {
                neg.counts[b] += 1;
            }
        }
        return;
    }
    // Large tensors: four interleaved u32 sub-histograms break the
    // dependency between increments of the same (popular) bin.
    let mut counts = vec![0u32; WAYS * 2 * BINS];
    let chunks = values.chunks_exact(WAYS);
    let rest = chunks.remainder();
    for c in chunks {
        for (w, &x) in c.iter().enumerate() {
            let (side, b) = bin(x);
            counts[(w * 2 + side) * BINS + b] += 1;
        }
    }
    for &x in rest {
        let (side, b) = bin(x);
        counts[side * BINS + b] += 1;
    }
    for w in 0..WAYS {
        let base = w * 2 * BINS;
        for (dst, src) in pos.counts.iter_mut().zip(&counts[base..base + BINS]) {
            *dst += *src as u64;
        }
        for (dst, src) in neg
            .counts
            .iter_mut()
            .zip(&counts[base + BINS..base + 2 * BINS])
        {
            *dst += *src as u64;
        }
    }
}

/// Statistics of one tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorStats {
    /// Samples seen.
    pub samples: u64,
    /// Finite elements seen.
    pub count: u64,
    /// NaN and infinite elements skipped.
    pub nonfinite: u64,
    pub min: f32,
    pub max: f32,
    /// Sums of per-sample extremes (for averaged MinMax), in sample order.
    pub sum_sample_min: f64,
    pub sum_sample_max: f64,
    /// Magnitudes of negative values; non-negative values.
    pub neg: Side,
    pub pos: Side,
    /// Per-channel (axis 1) extremes, when asked for.
    pub channel_min: Vec<f32>,
    pub channel_max: Vec<f32>,
}

impl TensorStats {
    /// Statistics of one sample's values (`dims` for per-channel extremes).
    pub fn of_sample(values: &[f32], dims: &[usize], histogram: bool, per_channel: bool) -> Self {
        let mut s = TensorStats {
            samples: 1,
            ..Default::default()
        };
        // Fast path for the usual all-finite tensor; filter otherwise.
        let filtered: Vec<f32>;
        let finite: &[f32] = if values.iter().all(|v| v.is_finite()) {
            values
        } else {
            filtered = values.iter().copied().filter(|v| v.is_finite()).collect();
            &filtered
        };
        s.nonfinite = (values.len() - finite.len()) as u64;
        s.count = finite.len() as u64;
        let (min, max) = min_max(finite);
        (s.min, s.max) = if finite.is_empty() {
            (0.0, 0.0)
        } else {
            (min, max)
        };
        s.sum_sample_min = s.min as f64;
        s.sum_sample_max = s.max as f64;
        if histogram && !finite.is_empty() {
            add_both(
                &mut s.neg,
                &mut s.pos,
                finite,
                (-s.min).max(0.0),
                s.max.max(0.0),
            );
        }
        if per_channel && dims.len() >= 2 {
            let c = dims[1];
            let inner: usize = dims[2..].iter().product();
            s.channel_min = vec![f32::INFINITY; c];
            s.channel_max = vec![f32::NEG_INFINITY; c];
            for (i, &v) in values.iter().enumerate() {
                if v.is_finite() {
                    let ch = (i / inner.max(1)) % c;
                    s.channel_min[ch] = s.channel_min[ch].min(v);
                    s.channel_max[ch] = s.channel_max[ch].max(v);
                }
            }
        }
        s
    }

    /// Adds `other` (later samples) into `self`.
    pub fn merge(&mut self, other: &TensorStats) {
        if self.samples == 0 {
            *self = other.clone();
            return;
        }
        self.samples += other.samples;
        self.count += other.count;
        self.nonfinite += other.nonfinite;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum_sample_min += other.sum_sample_min;
        self.sum_sample_max += other.sum_sample_max;
        self.neg.merge(&other.neg);
        self.pos.merge(&other.pos);
        if self.channel_min.len() == other.channel_min.len() {
            for (a, b) in self.channel_min.iter_mut().zip(&other.channel_min) {
                *a = a.min(*b);
            }
            for (a, b) in self.channel_max.iter_mut().zip(&other.channel_max) {
                *a = a.max(*b);
            }
        } else {
            // Channel counts differ between samples: per-channel stats are meaningless.
            self.channel_min.clear();
            self.channel_max.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_exactly_in_any_order() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let b: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.11).cos() * 40.0 - 5.0)
            .collect();
        let sa = TensorStats::of_sample(&a, &[1000], true, false);
        let sb = TensorStats::of_sample(&b, &[1000], true, false);
        let mut ab = sa.clone();
        ab.merge(&sb);
        let mut ba = sb.clone();
        ba.merge(&sa);
        assert_eq!(ab.pos, ba.pos);
        assert_eq!(ab.neg, ba.neg);
        // Same as one histogram over everything.
        let all: Vec<f32> = a.iter().chain(&b).copied().collect();
        let s = TensorStats::of_sample(&all, &[2000], true, false);
        assert_eq!(s.pos, ab.pos);
        assert_eq!(s.neg, ab.neg);
        assert_eq!(ab.pos.total() + ab.neg.total(), 2000);
    }

    #[test]
    fn large_and_small_tensor_paths_agree() {
        // 40k values take the interleaved path; 10k-value pieces the in-place one.
        let v: Vec<f32> = (0..40_000)
            .map(|i| ((i as f32) * 0.013).sin() * (1.0 + i as f32 / 4000.0))
            .collect();
        let whole = TensorStats::of_sample(&v, &[v.len()], true, false);
        let mut parts = TensorStats::default();
        for c in v.chunks(10_000) {
            parts.merge(&TensorStats::of_sample(c, &[c.len()], true, false));
        }
        assert_eq!(whole.pos, parts.pos);
        assert_eq!(whole.neg, parts.neg);
        assert_eq!(whole.pos.total() + whole.neg.total(), 40_000);
    }

    #[test]
    fn range_exponent_is_tight() {
        assert_eq!(range_exp(1.0), 1);
        assert_eq!(range_exp(0.99), 0);
        assert_eq!(range_exp(3.0), 2);
        assert_eq!(range_exp(4.0), 3);
    }

    #[test]
    fn nonfinite_values_are_counted_not_binned() {
        let s = TensorStats::of_sample(&[1.0, f32::NAN, f32::INFINITY, -2.0], &[4], true, false);
        assert_eq!(s.nonfinite, 2);
        assert_eq!((s.min, s.max), (-2.0, 1.0));
        assert_eq!(s.pos.total() + s.neg.total(), 2);
    }

    #[test]
    fn per_channel_extremes() {
        // [1, 2, 2]: channel 0 = [1, -1], channel 1 = [5, 3].
        let s = TensorStats::of_sample(&[1.0, -1.0, 5.0, 3.0], &[1, 2, 2], false, true);
        assert_eq!(s.channel_min, vec![-1.0, 3.0]);
        assert_eq!(s.channel_max, vec![1.0, 5.0]);
    }
}
