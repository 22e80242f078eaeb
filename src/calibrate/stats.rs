//! Streaming statistics of one tensor across samples.
//!
//! Memory is fixed per tensor (two histograms of [`BINS`] counts, allocated
//! only when histograms are asked for, a few scalars, optional per-channel
//! extremes), whatever the number of samples.
//!
//! Histograms are exact and order-free: each side (negative values by
//! magnitude, non-negative values) covers `[0, R)` with `R` a power of two
//! and `BINS` bins, so the bin width is a power of two and `|x| / width` is
//! computed without rounding. When a larger value arrives, `R` doubles and
//! neighbouring bins merge, which gives exactly the counts a histogram built
//! at the larger range from the start would have. Merging per-sample
//! statistics therefore gives the same result in any order and with any
//! number of workers; the only float sums (for averaged MinMax) are added in
//! an order fixed by the sample count alone (samples within a block, then
//! blocks, see `Calibrator::collect`).

/// Bins per histogram side.
pub const BINS: usize = 2048;

/// One side of the histogram: counts of `|x|` in `[0, 2^exp)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Side {
    /// log2 of the covered range; `None` while empty.
    pub exp: Option<i32>,
    /// `BINS` counts once `exp` is set; empty before (a MinMax-only
    /// calibration never allocates them).
    pub counts: Vec<u64>,
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
            self.counts = vec![0; BINS];
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

/// Minimum and maximum of the finite values and whether every value is
/// finite, eight lanes at a time (compiles to vector min/max; `f32::min`
/// would not, being NaN-aware). `x * 0` is NaN exactly for NaN and ±inf, so
/// one lane-wise sum of it flags a non-finite value without a branch.
#[inline(always)]
fn scan_body(v: &[f32]) -> (f32, f32, bool) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let mut bad = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            lo[k] = if c[k] < lo[k] { c[k] } else { lo[k] };
            hi[k] = if c[k] > hi[k] { c[k] } else { hi[k] };
            bad[k] += c[k] * 0.0;
        }
    }
    for &x in rest {
        lo[0] = if x < lo[0] { x } else { lo[0] };
        hi[0] = if x > hi[0] { x } else { hi[0] };
        bad[0] += x * 0.0;
    }
    let lo = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (lo, hi, bad.iter().sum::<f32>() == 0.0)
}

/// [`scan_body`] in AVX2: `vminps(x, lo)` is `x < lo ? x : lo` (NaN
/// ignored), the same comparison, with two accumulators per statistic so
/// the loop is not one long dependency chain.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(v: &[f32]) -> (f32, f32, bool) {
    use std::arch::x86_64::*;
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    let mut lo = [_mm256_set1_ps(f32::INFINITY); 2];
    let mut hi = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
    let mut bad = [_mm256_setzero_ps(); 2];
    let zero = _mm256_setzero_ps();
    for c in chunks {
        for (k, half) in c.chunks_exact(8).enumerate() {
            // SAFETY: `half` holds 8 f32.
            let x = unsafe { _mm256_loadu_ps(half.as_ptr()) };
            lo[k] = _mm256_min_ps(x, lo[k]);
            hi[k] = _mm256_max_ps(x, hi[k]);
            bad[k] = _mm256_add_ps(bad[k], _mm256_mul_ps(x, zero));
        }
    }
    let mut l = [0f32; 8];
    let mut h = [0f32; 8];
    let mut b = [0f32; 8];
    // SAFETY: each array holds 8 f32.
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), _mm256_min_ps(lo[0], lo[1]));
        _mm256_storeu_ps(h.as_mut_ptr(), _mm256_max_ps(hi[0], hi[1]));
        _mm256_storeu_ps(b.as_mut_ptr(), _mm256_add_ps(bad[0], bad[1]));
    }
    let (rlo, rhi, rfinite) = scan_body(rest);
    let lo = l.iter().fold(rlo, |a, &x| if x < a { x } else { a });
    let hi = h.iter().fold(rhi, |a, &x| if x > a { x } else { a });
    (lo, hi, rfinite && b.iter().sum::<f32>() == 0.0)
}

/// [`scan_body`] with 8-wide AVX2 vectors when the CPU has them.
fn scan(v: &[f32]) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above); the body is
            // safe code.
            return unsafe { scan_avx2(v) };
        }
    }
    scan_body(v)
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
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above); the body is
            // safe code.
            unsafe { bin_avx2(neg, pos, values, inv) };
            return;
        }
    }
    bin_body(neg, pos, values, inv);
}

/// Bins per side as a float, the clamp of the bin index.
const LAST_BIN: f32 = (BINS - 1) as f32;

/// [`bin_body`] with the indices computed eight at a time: `x < 0` picks
/// the side (and its inverse width through `vblendvps`), `|x|·inv` is
/// clamped to the last bin and truncated (`vcvttps2dq`: exact, the operand
/// is finite and in `[0, BINS)`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bin_avx2(neg: &mut Side, pos: &mut Side, values: &[f32], inv: [f32; 2]) {
    use std::arch::x86_64::*;
    let (inv_pos, inv_neg) = (_mm256_set1_ps(inv[0]), _mm256_set1_ps(inv[1]));
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let last = _mm256_set1_ps(LAST_BIN);
    let offset = _mm256_set1_epi32(BINS as i32);
    count_bins(neg, pos, values, |block, idx| {
        let chunks = block.chunks_exact(8);
        let rest = chunks.remainder();
        for (c, out) in chunks.zip(idx.chunks_exact_mut(8)) {
            // SAFETY: `c` and `out` hold 8 lanes each.
            unsafe {
                let x = _mm256_loadu_ps(c.as_ptr());
                // All ones for a value below 0 (not −0.0, which counts as
                // a 0 of the non-negative side): selects BINS, the offset
                // of the negative side, and its inverse width.
                let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
                let neg = _mm256_castps_si256(below);
                let w = _mm256_blendv_ps(inv_pos, inv_neg, below);
                let m = _mm256_min_ps(_mm256_mul_ps(_mm256_and_ps(x, abs_mask), w), last);
                let b = _mm256_add_epi32(_mm256_cvttps_epi32(m), _mm256_and_si256(neg, offset));
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, b);
            }
        }
        let done = block.len() - rest.len();
        for (i, &x) in idx[done..].iter_mut().zip(rest) {
            *i = bin_of(x, inv) as u32;
        }
    });
}

/// Bin of `x` in `[pos | neg]` (`2·BINS` counts): the side's bin index
/// `|x| · inv` (exact: the inverses are powers of two), clamped in float
/// first. Branch-free: `x < 0` picks the side (no mispredictions on data
/// centred on zero; −0.0 is a 0 of the non-negative side, whose range
/// always exists, unlike the negative side's).
#[inline(always)]
fn bin_of(x: f32, inv: [f32; 2]) -> usize {
    let side = usize::from(x < 0.0);
    side * BINS + (x.abs() * inv[side]).min(LAST_BIN) as usize
}

fn bin_body(neg: &mut Side, pos: &mut Side, values: &[f32], inv: [f32; 2]) {
    count_bins(neg, pos, values, |block, idx| {
        for (i, &x) in idx.iter_mut().zip(block) {
            *i = bin_of(x, inv) as u32;
        }
    });
}

/// Counts `values` into the two sides, a block at a time: `index` writes
/// the block's bin indices (into `[pos | neg]`), then they are counted.
#[inline(always)]
fn count_bins(
    neg: &mut Side,
    pos: &mut Side,
    values: &[f32],
    mut index: impl FnMut(&[f32], &mut [u32]),
) {
    const BLOCK: usize = 256;
    const WAYS: usize = 2;
    // Per-thread interleaved sub-histograms, kept zeroed between calls.
    thread_local! {
        static WAYS_BUF: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut idx = [0u32; BLOCK];
    let mut sides: [&mut [u64]; 2] = [&mut pos.counts, &mut neg.counts];
    // Small tensors count in place (folding the sub-histograms would cost
    // more than it saves).
    if values.len() < 2 * WAYS * BINS {
        for block in values.chunks(BLOCK) {
            let idx = &mut idx[..block.len()];
            index(block, idx);
            for &b in idx.iter() {
                let b = b as usize;
                // A negative value only arrives when the negative side has
                // a range, hence counts.
                sides[b / BINS][b % BINS] += 1;
            }
        }
        return;
    }
    // Large ones: two interleaved u32 sub-histograms break the dependency
    // between increments of the same (popular) bin; folded into the u64
    // counts and zeroed again in one pass, at least every 2^32 values (so
    // no u32 count can overflow).
    let mut ways = WAYS_BUF.take();
    if ways.len() != WAYS * 2 * BINS {
        ways = vec![0u32; WAYS * 2 * BINS];
    }
    for piece in values.chunks(u32::MAX as usize) {
        for block in piece.chunks(BLOCK) {
            let idx = &mut idx[..block.len()];
            index(block, idx);
            let pairs = idx.chunks_exact(WAYS);
            let rest = pairs.remainder();
            for p in pairs {
                for (w, &b) in p.iter().enumerate() {
                    ways[w * 2 * BINS + b as usize] += 1;
                }
            }
            for &b in rest {
                ways[b as usize] += 1;
            }
        }
        let (w0, w1) = ways.split_at_mut(2 * BINS);
        for (side, (a, b)) in sides
            .iter_mut()
            .zip(w0.chunks_exact_mut(BINS).zip(w1.chunks_exact_mut(BINS)))
        {
            for ((dst, x), y) in side.iter_mut().zip(a.iter_mut()).zip(b.iter_mut()) {
                *dst += *x as u64 + *y as u64;
                (*x, *y) = (0, 0);
            }
        }
    }
    WAYS_BUF.set(ways);
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
        let mut s = TensorStats::default();
        s.add_sample(values, dims, histogram, per_channel);
        s
    }

    /// Adds one (later) sample's values in place: the same result as
    /// merging [`TensorStats::of_sample`] of it, without building one (the
    /// histogram bins at the larger of the two ranges directly, which gives
    /// exactly the counts of binning finer and merging).
    pub fn add_sample(
        &mut self,
        values: &[f32],
        dims: &[usize],
        histogram: bool,
        per_channel: bool,
    ) {
        // Fast path for the usual all-finite tensor; filter otherwise.
        let (mut min, mut max, all_finite) = scan(values);
        let filtered: Vec<f32>;
        let finite: &[f32] = if all_finite {
            values
        } else {
            filtered = values.iter().copied().filter(|v| v.is_finite()).collect();
            (min, max, _) = scan(&filtered);
            &filtered
        };
        let (min, max) = if finite.is_empty() {
            (0.0, 0.0)
        } else {
            (min, max)
        };
        self.add_extremes(min, max, finite.len(), values.len() - finite.len());
        if histogram && !finite.is_empty() {
            add_both(
                &mut self.neg,
                &mut self.pos,
                finite,
                (-min).max(0.0),
                max.max(0.0),
            );
        }
        if per_channel {
            self.add_channels(values, dims);
        }
    }

    /// One sample's extremes and element counts (finite, non-finite).
    fn add_extremes(&mut self, min: f32, max: f32, finite: usize, nonfinite: usize) {
        if self.samples == 0 {
            (self.min, self.max) = (min, max);
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
        self.samples += 1;
        self.nonfinite += nonfinite as u64;
        self.count += finite as u64;
        self.sum_sample_min += min as f64;
        self.sum_sample_max += max as f64;
    }

    /// Adds one sample of `Relu(x)` given `x`, without its histogram (see
    /// [`TensorStats::set_relu_histograms`]): when `x` is all finite, the
    /// extremes are `x`'s clamped at 0 (one scan of `x`, no copy);
    /// otherwise (and for per-channel extremes) `Relu(x)` is built (`−∞ → 0`,
    /// NaN stays NaN) and added as a sample.
    pub fn add_relu_sample(&mut self, x: &[f32], dims: &[usize], per_channel: bool) {
        let (min, max, all_finite) = scan(x);
        if all_finite && !x.is_empty() && !per_channel {
            self.add_extremes(min.max(0.0), max.max(0.0), x.len(), 0);
        } else {
            let y: Vec<f32> = x
                .iter()
                .map(|&v| if v > 0.0 || v.is_nan() { v } else { 0.0 })
                .collect();
            self.add_sample(&y, dims, false, per_channel);
        }
    }

    /// The histograms of `Relu(x)` from those of `x` (all samples added,
    /// `self` built by [`TensorStats::add_relu_sample`]): exactly what
    /// binning `Relu(x)` gives. `Relu` keeps every non-negative value, so
    /// the non-negative side is `x`'s (same range, same bins), and every
    /// other finite value of `Relu(x)` is a 0, counted in bin 0.
    pub fn set_relu_histograms(&mut self, x: &TensorStats) {
        self.neg = Side::default();
        self.pos = x.pos.clone();
        let zeros = self.count.saturating_sub(x.pos.total());
        if zeros > 0 {
            self.pos.grow_to(range_exp(0.0));
            self.pos.counts[0] += zeros;
        }
    }

    /// Per-channel (axis 1) extremes of one sample, merged into ours.
    fn add_channels(&mut self, values: &[f32], dims: &[usize]) {
        let c = if dims.len() >= 2 { dims[1] } else { 0 };
        let first = self.samples == 1;
        if c == 0 || (!first && self.channel_min.len() != c) {
            // Channel counts differ between samples: per-channel stats are
            // meaningless.
            self.channel_min.clear();
            self.channel_max.clear();
            return;
        }
        if first {
            self.channel_min = vec![f32::INFINITY; c];
            self.channel_max = vec![f32::NEG_INFINITY; c];
        }
        let inner: usize = dims[2..].iter().product();
        // Runs of `inner` values share a channel; `scan` ignores NaN and the
        // filter below drops ±inf.
        for (run, chunk) in values.chunks(inner.max(1)).enumerate() {
            let ch = run % c;
            let (lo, hi, finite) = scan(chunk);
            let (lo, hi) = if finite {
                (lo, hi)
            } else {
                let f: Vec<f32> = chunk.iter().copied().filter(|v| v.is_finite()).collect();
                let (lo, hi, _) = scan(&f);
                (lo, hi)
            };
            self.channel_min[ch] = self.channel_min[ch].min(lo);
            self.channel_max[ch] = self.channel_max[ch].max(hi);
        }
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
        // 40k values take the interleaved path (twice: its per-thread
        // sub-histograms must come back zeroed); 5k-value pieces, below
        // 2·WAYS·BINS, the in-place one.
        let v: Vec<f32> = (0..40_000)
            .map(|i| ((i as f32) * 0.013).sin() * (1.0 + i as f32 / 4000.0))
            .collect();
        let whole = TensorStats::of_sample(&v, &[v.len()], true, false);
        assert_eq!(whole, TensorStats::of_sample(&v, &[v.len()], true, false));
        let mut parts = TensorStats::default();
        for c in v.chunks(5_000) {
            parts.merge(&TensorStats::of_sample(c, &[c.len()], true, false));
        }
        assert_eq!(whole.pos, parts.pos);
        assert_eq!(whole.neg, parts.neg);
        assert_eq!(whole.pos.total() + whole.neg.total(), 40_000);
    }

    #[test]
    fn vector_and_portable_binning_agree() {
        // Exact bin edges, both signs, zeros, the clamp at the top, lengths
        // around the vector width and the interleaving threshold.
        let mut v: Vec<f32> = (0..40_003)
            .map(|i| ((i as f32) * 0.37).sin() * 7.9 * if i % 5 == 0 { -1.0 } else { 1.0 })
            .collect();
        v.extend((0..2048).map(|i| i as f32 / 256.0));
        v.extend([0.0, -0.0, 7.999, -8.0, 1e-30, -1e-30]);
        for len in [7, 8, 9, 255, 257, 16_383, 16_384, v.len()] {
            let part = &v[..len];
            let (lo, hi, _) = scan(part);
            let fresh = || {
                let (mut neg, mut pos) = (Side::default(), Side::default());
                neg.grow_to(range_exp((-lo).max(0.0)));
                pos.grow_to(range_exp(hi.max(0.0)));
                let inv = [BINS as f32 / pos.range(), BINS as f32 / neg.range()];
                (neg, pos, inv)
            };
            let (mut n1, mut p1, inv) = fresh();
            bin_body(&mut n1, &mut p1, part, inv);
            // Reference: one value at a time.
            let (mut n2, mut p2, _) = fresh();
            for &x in part {
                let b = bin_of(x, inv);
                if b < BINS {
                    p2.counts[b] += 1;
                } else {
                    n2.counts[b - BINS] += 1;
                }
            }
            assert_eq!((&n1, &p1), (&n2, &p2), "portable, {len} values");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let (mut n3, mut p3, _) = fresh();
                // SAFETY: AVX2 checked just above.
                unsafe { bin_avx2(&mut n3, &mut p3, part, inv) };
                assert_eq!((&n3, &p3), (&n2, &p2), "AVX2, {len} values");
            }
            let (slo, shi, finite) = scan_body(part);
            assert_eq!((slo, shi, finite), scan(part), "scan, {len} values");
        }
    }

    #[test]
    fn adding_in_place_equals_merging_per_sample_statistics() {
        let samples: Vec<Vec<f32>> = (0..5)
            .map(|k| {
                (0..3000 + 997 * k)
                    .map(|i| ((i * (k + 3)) as f32 * 0.01).cos() * (k as f32 + 0.5).powi(3))
                    .collect()
            })
            .collect();
        let mut merged = TensorStats::default();
        let mut added = TensorStats::default();
        for s in &samples {
            merged.merge(&TensorStats::of_sample(s, &[1, 3, s.len() / 3], true, true));
            added.add_sample(s, &[1, 3, s.len() / 3], true, true);
        }
        assert_eq!(merged, added);
    }

    #[test]
    fn relu_statistics_derived_from_the_input_equal_binning_the_output() {
        let mut seed = 11u64;
        let mut rand = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f32 / (1u64 << 31) as f32
        };
        let relu = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&x| if x > 0.0 || x.is_nan() { x } else { 0.0 })
                .collect()
        };
        // Growing ranges, an all-negative sample, non-finite values (−∞
        // becomes a finite 0), and large and small tensors.
        let samples: Vec<Vec<f32>> = vec![
            (0..300).map(|_| rand() - 0.5).collect(),
            (0..40_000).map(|_| (rand() - 0.6) * 8.0).collect(),
            (0..50).map(|_| -rand()).collect(),
            vec![
                1.5,
                f32::NEG_INFINITY,
                -2.0,
                f32::NAN,
                0.25,
                f32::INFINITY,
                -0.0,
            ],
            (0..5000).map(|_| (rand() - 0.3) * 100.0).collect(),
        ];
        let (mut x, mut direct, mut derived) = (
            TensorStats::default(),
            TensorStats::default(),
            TensorStats::default(),
        );
        for v in &samples {
            let dims = [1, v.len()];
            x.add_sample(v, &dims, true, false);
            direct.add_sample(&relu(v), &dims, true, false);
            derived.add_relu_sample(v, &dims, false);
        }
        derived.set_relu_histograms(&x);
        assert_eq!(derived, direct);
    }

    #[test]
    fn negative_zero_is_a_zero_of_the_non_negative_side() {
        // No value below 0, so no negative side: −0.0 must not be binned
        // there (it used to index the absent side), on either code path.
        for n in [5usize, 20_000] {
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        -0.0
                    } else {
                        1000.0 + (i % 7) as f32
                    }
                })
                .collect();
            let s = TensorStats::of_sample(&v, &[n], true, false);
            assert!(s.neg.counts.is_empty(), "{n}");
            assert_eq!(s.pos.total(), n as u64);
            assert_eq!(s.pos.counts[0], n.div_ceil(3) as u64);
            let mut b = TensorStats::default();
            b.pos.grow_to(s.pos.exp.unwrap_or(0));
            bin_body(
                &mut b.neg,
                &mut b.pos,
                &v,
                [BINS as f32 / s.pos.range(), 0.0],
            );
            assert_eq!(b.pos, s.pos, "{n}");
        }
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
