//! Streaming sums of the parity comparison: one [`Accum`] per output and
//! per compared layer, fed sample by sample. A sample's layer sums are
//! taken where the sample ran ([`layer_sums`], in the worker, from tract's
//! FP32 buffers read in place and the int8 bytes dequantized once), then
//! merged in sample order, so the verdict does not depend on the number
//! of workers.

use super::{output, OutputMetrics};
use crate::error::{Error, Result};
use crate::ir::{DataType, Tensor};
use crate::passes::equalize::ChannelScale;
use crate::tract::{f32_view, from_tract};
use std::collections::BTreeMap;
use tract_onnx::prelude::TValue;

/// Independent f32 partial sums (one AVX register) in [`block_sums`].
const LANES: usize = 8;
/// Elements summed in f32 before the totals move to f64: 128 per lane,
/// a relative rounding error under 1e-5 of the block's sum.
const BLOCK: usize = 1024;

/// Streaming sums for one pair of tensors.
#[derive(Clone, Debug, Default)]
pub(crate) struct Accum {
    n: u64,
    ref2: f64,
    test2: f64,
    err2: f64,
    dot: f64,
    max_abs: f64,
    sum_abs: f64,
    rows: u64,
    top1: u64,
    top5: u64,
    class_like: bool,
    /// FP32's top-1 classes seen (up to two: whether they vary).
    classes: Vec<usize>,
    decisions: output::Decisions,
}

impl Accum {
    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub(crate) fn add(&mut self, a: &[f32], b: &[f32], dims: &[usize]) {
        self.add_values(a, b);
        if dims.len() == 2 && dims[1] >= 2 {
            self.class_like = true;
            let c = dims[1];
            for (ra, rb) in a.chunks(c).zip(b.chunks(c)) {
                let (best, margin) = output::margins(ra);
                if self.classes.len() < 2 && !self.classes.contains(&best) {
                    self.classes.push(best);
                }
                let rank: Vec<usize> = top_k(rb, 5);
                self.rows += 1;
                self.top1 += u64::from(rank.first() == Some(&best));
                self.decisions.add(margin, rank.first() == Some(&best));
                self.top5 += u64::from(rank.contains(&best));
            }
        }
    }

    /// Adds the element sums of the pairs `(a[i], b[i])`, a block of
    /// [`BLOCK`] at a time: [`block_sums`] in f32 lanes (vector registers),
    /// each block's totals added in f64. A block whose f32 sums overflow
    /// (values beyond ~1e19) is summed again in f64. NaN errors make
    /// `max_abs` NaN, as they stay.
    fn add_values(&mut self, a: &[f32], b: &[f32]) {
        let n = a.len().min(b.len());
        let mut abs_nan = false;
        let mut max = 0f64;
        for (ca, cb) in a[..n].chunks(BLOCK).zip(b[..n].chunks(BLOCK)) {
            let mut s = block_sums(ca, cb);
            if !s.iter().all(|v| v.is_finite()) {
                s = block_sums_f64(ca, cb);
            }
            self.ref2 += s[0];
            self.test2 += s[1];
            self.err2 += s[2];
            self.dot += s[3];
            self.sum_abs += s[4];
            // |err| ≥ 0, so its sum is NaN exactly when some error is.
            abs_nan |= s[4].is_nan();
            max = max.max(s[5]);
        }
        self.n += n as u64;
        let m = if abs_nan { f64::NAN } else { max };
        if m > self.max_abs || m.is_nan() {
            self.max_abs = m;
        }
    }

    /// Adds the sums of `o` (another sample's, say) to these.
    pub(crate) fn merge(&mut self, o: &Accum) {
        self.n += o.n;
        self.ref2 += o.ref2;
        self.test2 += o.test2;
        self.err2 += o.err2;
        self.dot += o.dot;
        self.sum_abs += o.sum_abs;
        if o.max_abs > self.max_abs || o.max_abs.is_nan() {
            self.max_abs = o.max_abs;
        }
        self.rows += o.rows;
        self.top1 += o.top1;
        self.top5 += o.top5;
        self.class_like |= o.class_like;
        for &c in &o.classes {
            if self.classes.len() < 2 && !self.classes.contains(&c) {
                self.classes.push(c);
            }
        }
        self.decisions.merge(&o.decisions);
    }

    pub(crate) fn sqnr(&self) -> f64 {
        if self.err2 == 0.0 {
            return 300.0;
        }
        if self.ref2 == 0.0 {
            return f64::NEG_INFINITY;
        }
        (10.0 * (self.ref2 / self.err2).log10()).min(300.0)
    }

    pub(crate) fn cosine(&self) -> f64 {
        if self.ref2 == 0.0 && self.test2 == 0.0 {
            return 1.0;
        }
        self.dot / (self.ref2.sqrt() * self.test2.sqrt()).max(1e-300)
    }

    /// The rows of class scores whose FP32 margin is at least `near_tie`
    /// ([`output::Decisions`]), when FP32's top class varies among the rows
    /// (else 0: agreement on one class says little), and the top-1
    /// agreement on them.
    pub(crate) fn decisive_rows(&self, near_tie: f64) -> (u64, f64) {
        let (n, agree) = self.decisions.decisive(near_tie);
        (if self.classes.len() > 1 { n } else { 0 }, agree)
    }

    /// The metrics of output `name` over everything added (not judged yet:
    /// [`output::OutputAccum::finish`]).
    pub(crate) fn output_metrics(&self, name: &str) -> OutputMetrics {
        let a = self;
        OutputMetrics {
            name: name.to_string(),
            elements: a.n,
            max_abs_error: a.max_abs,
            mean_abs_error: a.sum_abs / a.n.max(1) as f64,
            cosine: a.cosine(),
            sqnr_db: a.sqnr(),
            top1_agreement: (a.class_like && a.rows > 0).then(|| a.top1 as f64 / a.rows as f64),
            top5_agreement: (a.class_like && a.rows > 0).then(|| a.top5 as f64 / a.rows as f64),
            decisive_rows: None,
            decisive_top1_agreement: None,
            positions: None,
            mask_iou: None,
            vector_cosine: None,
            kind: String::new(),
            judged_by: String::new(),
            gate: Vec::new(),
            failures: Vec::new(),
        }
    }
}

fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[j].total_cmp(&v[i]).then(i.cmp(&j)));
    idx.truncate(k);
    idx
}

/// A quantized tensor and its FP32 counterpart, which the per-layer
/// comparison dequantizes and compares.
pub(super) struct LayerPair {
    /// The int8 tensor.
    pub int8: String,
    /// The FP32 tensor it stands for.
    pub fp32: String,
    /// Its producing node and op.
    pub node: String,
    pub op: String,
    pub scale: f32,
    pub zero_point: i64,
    /// The interval outside which every reader of the FP32 tensor is
    /// constant ([`crate::ir::analysis::flat_outside`]): both sides are
    /// clamped to it before the comparison (what lies beyond changes no
    /// result; the quantizer clamps a computing node's range to it).
    pub clamp: Option<(f32, f32)>,
}

/// Adds one sample's outputs to their accumulators.
pub(super) fn add_outputs(
    out_names: &[String],
    (reference, got): (&[Tensor], &BTreeMap<String, Tensor>),
    outs: &mut [output::OutputAccum],
) -> Result<()> {
    for (k, name) in out_names.iter().enumerate() {
        let r = &reference[k];
        let t = got
            .get(name)
            .ok_or_else(|| Error::tensor(name, "the INT8 model has no output of this name"))?;
        if !r.dtype().is_float() {
            continue;
        }
        if r.dims() != t.dims() {
            return Err(Error::tensor(
                name,
                format!("FP32 output {:?}, INT8 output {:?}", r.dims(), t.dims()),
            ));
        }
        let (fa, fb) = (r.to_f32_vec()?, t.to_f32_vec()?);
        outs[k].add(&fa, &fb, r.dims());
    }
    Ok(())
}

/// One sample's sums per compared layer: `reference[k]` is FP32's tensor
/// for `pairs[k]` (read in place when it is f32), `got` the int8 model's
/// values. A pair whose int8 tensor is missing, or whose shapes differ,
/// adds nothing. Those named in `rescaled` are scaled back first.
pub(super) fn layer_sums(
    pairs: &[LayerPair],
    rescaled: &BTreeMap<String, ChannelScale>,
    reference: &[TValue],
    got: &BTreeMap<String, Tensor>,
) -> Result<Vec<Accum>> {
    let mut sums = vec![Accum::default(); pairs.len()];
    // One buffer for the dequantized values of every layer.
    let mut deq: Vec<f32> = Vec::new();
    let mut clamped: Vec<f32> = Vec::new();
    for (k, p) in pairs.iter().enumerate() {
        let (Some(r), Some(t)) = (reference.get(k), got.get(&p.int8)) else {
            continue;
        };
        if r.shape() != t.dims() {
            continue;
        }
        dequantize_into(t, p.zero_point, p.scale, &mut deq)?;
        if let Some(scale) = rescaled.get(&p.fp32) {
            if scale.undo(&mut deq, t.dims()).is_none() {
                continue;
            }
        }
        let owned;
        let x = match f32_view(r) {
            Some(x) => x,
            None => {
                owned = from_tract(r)?.to_f32_vec()?;
                &owned
            }
        };
        match p.clamp {
            // Both sides as the readers see them: beyond the interval no
            // value changes a result, whether the quantizer clamped there
            // or not.
            Some(bounds) => {
                use crate::ir::analysis::clamp_to;
                clamped.clear();
                clamped.extend(x.iter().map(|&v| clamp_to(v, bounds)));
                for v in deq.iter_mut() {
                    *v = clamp_to(*v, bounds);
                }
                sums[k].add_values(&clamped, &deq);
            }
            None => sums[k].add_values(x, &deq),
        }
    }
    Ok(sums)
}

/// `(q − z)·s` for the elements of `t`, into `out` (replacing it): bytes
/// read directly for 8-bit tensors, any other integer type converted.
fn dequantize_into(t: &Tensor, z: i64, s: f32, out: &mut Vec<f32>) -> Result<()> {
    out.clear();
    match (t.dtype(), t.raw()) {
        (DataType::Uint8, Some(b)) => {
            let z = z as i32;
            out.extend(b.iter().map(|&q| (i32::from(q) - z) as f32 * s));
        }
        (DataType::Int8, Some(b)) => {
            let z = z as i32;
            out.extend(b.iter().map(|&q| (i32::from(q as i8) - z) as f32 * s));
        }
        _ => out.extend(t.to_i64_vec()?.iter().map(|&q| (q - z) as f32 * s)),
    }
    Ok(())
}

/// ref², test², err², dot, Σ|err| and max |err| of one block of pairs, in
/// f32 lanes, with AVX2 where the processor has it (the same arithmetic:
/// the lanes, their order and the fold are fixed, so the result does not
/// depend on the processor).
fn block_sums(a: &[f32], b: &[f32]) -> [f64; 6] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2 (checked above).
            return unsafe { block_sums_avx2(a, b) };
        }
    }
    block_sums_lanes(a, b)
}

/// [`block_sums_lanes`] in AVX2 registers: the same lanes, the same
/// operations in the same order (multiply, then add: no fused
/// multiply-add), so the same sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_sums_avx2(a: &[f32], b: &[f32]) -> [f64; 6] {
    use std::arch::x86_64::*;
    let whole = a.len().min(b.len()) / LANES * LANES;
    let sign = _mm256_set1_ps(-0.0);
    let (mut r2, mut t2, mut e2) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let (mut dot, mut abs, mut max) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    for i in (0..whole).step_by(LANES) {
        // SAFETY: i + LANES ≤ whole ≤ both lengths.
        let (x, y) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            )
        };
        let e = _mm256_andnot_ps(sign, _mm256_sub_ps(x, y));
        r2 = _mm256_add_ps(r2, _mm256_mul_ps(x, x));
        t2 = _mm256_add_ps(t2, _mm256_mul_ps(y, y));
        e2 = _mm256_add_ps(e2, _mm256_mul_ps(e, e));
        dot = _mm256_add_ps(dot, _mm256_mul_ps(x, y));
        abs = _mm256_add_ps(abs, e);
        // max > e ? max : e, as the portable lanes.
        max = _mm256_max_ps(max, e);
    }
    let mut lanes = [[0f32; LANES]; 6];
    for (out, v) in lanes.iter_mut().zip([r2, t2, e2, dot, abs, max]) {
        // SAFETY: `out` holds LANES f32s.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    }
    fold_lanes(lanes, &a[whole..], &b[whole..])
}

fn block_sums_lanes(a: &[f32], b: &[f32]) -> [f64; 6] {
    // lanes[k][l]: sum k over elements l, l + LANES, …
    let mut lanes = [[0f32; LANES]; 6];
    let whole = a.len().min(b.len()) / LANES * LANES;
    for (ca, cb) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        for l in 0..LANES {
            add_pair(&mut lanes, l, ca[l], cb[l]);
        }
    }
    fold_lanes(lanes, &a[whole..], &b[whole..])
}

/// Adds the pair `(x, y)` to lane `l` of the six sums.
#[inline(always)]
fn add_pair(lanes: &mut [[f32; LANES]; 6], l: usize, x: f32, y: f32) {
    let e = (x - y).abs();
    lanes[0][l] += x * x;
    lanes[1][l] += y * y;
    lanes[2][l] += e * e;
    lanes[3][l] += x * y;
    lanes[4][l] += e;
    // NaN is caught by the sum of |err| (see `Accum::add_values`).
    lanes[5][l] = if lanes[5][l] > e { lanes[5][l] } else { e };
}

/// The tail pairs (fewer than [`LANES`]) into lane 0, then the lanes
/// folded in f64: sums added, the maximum taken.
fn fold_lanes(mut lanes: [[f32; LANES]; 6], a: &[f32], b: &[f32]) -> [f64; 6] {
    for (&x, &y) in a.iter().zip(b) {
        add_pair(&mut lanes, 0, x, y);
    }
    let mut out = [0f64; 6];
    for (o, v) in out.iter_mut().zip(&lanes).take(5) {
        *o = v.iter().map(|&x| f64::from(x)).sum();
    }
    out[5] = lanes[5].iter().fold(0f64, |m, &v| m.max(f64::from(v)));
    out
}

/// [`block_sums`] in f64, for a block whose f32 sums overflowed.
fn block_sums_f64(a: &[f32], b: &[f32]) -> [f64; 6] {
    let mut out = [0f64; 6];
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        let e = (x - y).abs();
        out[0] += x * x;
        out[1] += y * y;
        out[2] += e * e;
        out[3] += x * y;
        out[4] += e;
        out[5] = out[5].max(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums in f64, element by element: what the blocks approximate.
    fn reference(a: &[f32], b: &[f32]) -> [f64; 6] {
        block_sums_f64(a, b)
    }

    fn pairs(n: usize, scale: f32) -> (Vec<f32>, Vec<f32>) {
        // A deterministic spread of signs and magnitudes.
        let a: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0 * scale)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| x + ((i * 31 % 17) as f32 - 8.0) / 64.0 * scale)
            .collect();
        (a, b)
    }

    #[test]
    fn block_sums_match_f64_sums_and_every_processor_gives_the_same() {
        for n in [0, 1, 7, 8, 9, 1023, 1024, 1025, 5000] {
            let (a, b) = pairs(n, 1.0);
            let mut acc = Accum::default();
            acc.add_values(&a, &b);
            let want = reference(&a, &b);
            let got = [
                acc.ref2,
                acc.test2,
                acc.err2,
                acc.dot,
                acc.sum_abs,
                acc.max_abs,
            ];
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1e-9),
                    "n {n} sum {k}: {g} vs {w}"
                );
            }
            assert_eq!(acc.n, n as u64);
            // The vector build and the portable one add the same lanes in
            // the same order.
            for chunk in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
                assert_eq!(
                    block_sums(chunk.0, chunk.1),
                    block_sums_lanes(chunk.0, chunk.1)
                );
            }
        }
    }

    #[test]
    fn overflowing_blocks_are_summed_in_f64_and_nan_errors_stay() {
        // Squares beyond f32's range (1e20² = 1e40).
        let (a, b) = pairs(100, 1e20);
        let mut acc = Accum::default();
        acc.add_values(&a, &b);
        let want = reference(&a, &b);
        assert!(acc.ref2.is_finite() && (acc.ref2 - want[0]).abs() <= 1e-9 * want[0]);
        let mut b = b;
        b[50] = f32::NAN;
        let mut acc = Accum::default();
        acc.add_values(&a[..64], &b[..64]);
        assert!(acc.max_abs.is_nan(), "a NaN error shows in max_abs");
        acc.add_values(&a[..8], &a[..8]);
        assert!(acc.max_abs.is_nan(), "and stays");
    }

    #[test]
    fn merged_sample_sums_equal_the_sums_of_both_samples() {
        let (a, b) = pairs(3000, 1.0);
        let (mut one, mut two) = (Accum::default(), Accum::default());
        one.add_values(&a[..BLOCK], &b[..BLOCK]);
        two.add_values(&a[BLOCK..], &b[BLOCK..]);
        let mut all = Accum::default();
        all.add_values(&a, &b);
        one.merge(&two);
        assert_eq!(one.n, all.n);
        assert!((one.sqnr() - all.sqnr()).abs() < 1e-9);
        assert!((one.cosine() - all.cosine()).abs() < 1e-12);
        assert_eq!(one.max_abs, all.max_abs);
    }
}
